"""The client facade and its sync twin against our daemon (with the runtime and real runc)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import threading
import uuid
from typing import TYPE_CHECKING

import pytest
from google.protobuf import empty_pb2

from pycontainerd.client.client import Client
from pycontainerd.client.stdio import Stdio
from pycontainerd.client.sync import Client as SyncClient
from pycontainerd.core import namespaces
from pycontainerd.core.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)
from pycontainerd.core.testing import RUNTIME_PLUGINS
from pycontainerd.daemon.testing import Daemon, daemon_env, require_binary, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    require_binary("/usr/sbin/runc")
    with short_tempdir("pfd") as base, Daemon(base, env=daemon_env(RUNTIME_PLUGINS)) as daemon:
        yield daemon.address


async def test_container_lifecycle_and_errors(address: str, image_ref: str, namespace: str) -> None:
    async with Client(address, namespace) as client:
        image = await client.pull(image_ref)
        assert (await client.get_image(image_ref)).target == image.target
        config = await image.config()
        assert config.cmd == ("/bin/sh",)
        container = await client.new_container(
            "life", image, args=["sleep", "600"], env=["GREETING=hi"], labels={"a": "1"}
        )
        assert container.labels == {"a": "1"}
        spec = await container.spec()
        assert "GREETING=hi" in spec["process"]["env"]
        assert [c.id for c in await client.list_containers("labels.a==1")] == ["life"]
        task = await container.new_task()
        with pytest.raises(InvalidArgumentError, match="stdout is not captured"):
            task.output()
        pid = await task.start()
        assert pid > 0
        assert (await container.task()).pid == pid
        with pytest.raises(FailedPreconditionError, match="cannot delete running task life"):
            await container.delete()
        with pytest.raises(FailedPreconditionError, match="must be stopped before deletion"):
            await task.delete()
        status = await task.delete(force=True)
        assert status.code == 128 + signal.SIGKILL
        await container.delete()
        with pytest.raises(NotFoundError):
            await client.snapshot_service().stat("life")
        with pytest.raises(NotFoundError):
            await client.load_container("life")


async def test_stdio_to_file_descriptors_and_stdin(
    address: str, image_ref: str, namespace: str
) -> None:
    async with Client(address, namespace) as client:
        image = await client.pull(image_ref)
        container = await client.new_container("cat", image, args=["cat"])
        read_end, write_end = os.pipe()
        try:
            task = await container.new_task(Stdio(stdin=b"fed through stdin\n", stdout=write_end))
            await task.start()
            assert (await task.wait()).code == 0
            await task.delete()
            os.close(write_end)
            write_end = -1
            with os.fdopen(read_end, "rb") as f:
                read_end = -1
                assert f.read() == b"fed through stdin\n"
        finally:
            for fd in (read_end, write_end):
                if fd >= 0:
                    os.close(fd)
        await container.delete()


async def test_subscription_is_live_inside_the_block(
    address: str, image_ref: str, namespace: str
) -> None:
    async with Client(address, namespace) as client:
        image = await client.pull(image_ref)
        only = f'topic=="/containers/create",namespace=={namespace}'
        async with client.subscribe(only) as events:
            await client.new_container("ev", image)
            first = await anext(events)
            # the subscription's own probes never come through
            assert first.topic == "/containers/create"
            assert first.namespace == namespace
            assert first.type_url == "containerd.events.ContainerCreate"
            assert first.fields["id"] == "ev"
        await (await client.load_container("ev")).delete()


async def test_export_import_and_push_round_trip(
    address: str, image_ref: str, namespace: str
) -> None:
    async with Client(address, namespace) as client:
        image = await client.pull(image_ref)
        buf = io.BytesIO()
        await client.export_archive(buf, image.name)
        await client.delete_image(image.name)
        assert await client.list_images() == []
        imported = await client.import_archive(io.BytesIO(buf.getvalue()), unpack=True)
        assert [(i.name, i.target.digest) for i in imported] == [(image.name, image.target.digest)]
        assert await imported[0].is_unpacked()
        pushed_ref = image_ref.replace("library/busybox", f"pushed/{namespace}")
        jobs: list[str] = []
        root = await client.push(
            pushed_ref, local=image.name, progress=lambda js: jobs.extend(j.status for j in js)
        )
        assert root.digest == image.target.digest
        assert jobs
    async with Client(address, f"{namespace}-2") as other:
        again = await other.pull(pushed_ref, unpack=False)
        assert again.target.digest == image.target.digest
        assert not await again.is_unpacked()


def test_sync_client_from_many_threads(address: str, image_ref: str, namespace: str) -> None:
    errors: list[BaseException] = []
    with SyncClient(address, namespace) as client:

        def worker(n: int) -> None:
            try:
                own = f"{namespace}-t{n}"
                with namespaces.with_namespace(own):  # this thread's calls only
                    image = client.pull(image_ref)
                    c = client.new_container(f"w{n}", image, args=["echo", str(n)])
                    task = c.new_task(Stdio.capture())
                    task.start()
                    assert task.wait().code == 0
                    assert task.read_output().stdout == f"{n}\n".encode()
                    task.delete()
                    assert [x.id for x in client.list_containers()] == [f"w{n}"]
                    image.delete()
                    c.delete()
                    for _ in range(20):
                        assert client.version().version
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert client.list_containers() == []  # the client's own namespace saw none


def test_sync_lease_applies_to_its_thread(address: str, namespace: str) -> None:
    with SyncClient(address, namespace) as client:
        with client.with_lease() as lease_id:
            assert namespaces.lease() == lease_id
            seen: list[str | None] = []
            t = threading.Thread(target=lambda: seen.append(namespaces.lease()))
            t.start()
            t.join()
            assert seen == [None]
            assert lease_id in [x.id for x in client.lease_manager().list()]
        assert lease_id not in [x.id for x in client.lease_manager().list()]
        assert namespaces.lease() is None


def test_sync_client_refuses_a_call_from_its_own_loop(
    address: str, image_ref: str, namespace: str
) -> None:
    with SyncClient(address, namespace) as client:
        failures: list[BaseException] = []

        def progress(jobs: object) -> None:
            try:
                client.version()
            except RuntimeError as exc:
                failures.append(exc)

        client.pull(image_ref, unpack=False, progress=progress)
        assert failures
        assert "called from its own event loop" in str(failures[0])


def test_sync_subscription_iterates_and_closes(address: str, namespace: str) -> None:
    with SyncClient(address, namespace) as client:
        topic_filter = f'topic=="/namespaces/create",namespace=={namespace}-x'
        unique = f"{namespace}-x"
        with client.subscribe(topic_filter) as events:
            with namespaces.with_namespace(unique):
                client.namespace_store().create(unique)
            event = next(events)
        assert event.topic == "/namespaces/create"
        assert event.fields["name"] == unique
        assert uuid.UUID(client.server().uuid).version == 4


async def test_against_a_daemon_without_the_runtime(
    ours: Daemon, image_ref: str, namespace: str
) -> None:
    async with Client(ours.address, namespace) as client:
        image = await client.pull(image_ref)
        container = await client.new_container("no-runtime", image)
        with pytest.raises(UnimplementedError) as excinfo:
            await container.new_task(Stdio.capture())
        assert str(excinfo.value).startswith("unknown service containerd.services.tasks.v1.Tasks")
        await container.delete()  # no Tasks service: nothing can block the delete
        with pytest.raises(NotFoundError):
            await client.load_container("no-runtime")


def test_sync_version_needs_no_loop_thread(ours: Daemon, namespace: str) -> None:
    # version() is one unary call made in the calling thread on a blocking
    # channel: it answers while the client's loop thread is held up.
    with SyncClient(ours.address, namespace) as client:
        release = threading.Event()
        released: list[bool] = []  # True: the loop was let go by this thread, not by the timeout
        client._loop.loop.call_soon_threadsafe(lambda: released.append(release.wait(30)))
        try:
            answers = [client.version() for _ in range(3)]
        finally:
            release.set()
        assert client.server().uuid  # the loop works again
        assert released == [True]
        assert answers[0].version
        assert answers == [answers[0]] * 3
    with pytest.raises(RuntimeError, match="closed"):
        client.version()


def test_sync_version_maps_errors(namespace: str) -> None:
    with short_tempdir("pfv") as base:
        client = SyncClient(str(base / "none.sock"), namespace, timeout=5)
        try:
            with pytest.raises(UnavailableError):
                client.version()
        finally:
            client.close()


@pytest.mark.parametrize("peer", ["ours", "containerd"])
async def test_subscribe_probe_is_seen_by_no_filtering_subscriber(
    peer: str, request: pytest.FixtureRequest, namespace: str
) -> None:
    daemon = request.getfixturevalue(peer)
    async with Client(daemon.address, namespace) as client:
        events = client.event_service()
        # another subscriber of this namespace's events: a plain stream, as any client's
        other = events.subscribe(f"namespace=={namespace}")
        pending = asyncio.ensure_future(anext(other))
        while not (await asyncio.wait({pending}, timeout=0.05))[0]:
            await events.publish("/test/ready", empty_pb2.Empty())
        seen = [pending.result().topic]
        async with client.subscribe(f"namespace=={namespace}") as mine:
            await events.publish("/test/after", empty_pb2.Empty())
            assert (await anext(mine)).topic in {"/test/ready", "/test/after"}
        while seen[-1] != "/test/after":
            seen.append((await anext(other)).topic)
        await other.aclose()  # type: ignore[attr-defined]
        assert set(seen) == {"/test/ready", "/test/after"}  # no probe came through
        names = await client.namespace_store().list()
        assert not [n for n in names if n.startswith("pycontainerd-subscribe-")]
