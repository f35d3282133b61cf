"""Our generated stubs against a real containerd (Debian package) on a private socket."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

CONTAINERD = Path("/usr/bin/containerd")
NS_MD = (("containerd-namespace", "default"),)

# A wedged peer must fail the test, not hang the suite.
pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture
def containerd_socket() -> Iterator[str]:
    if not CONTAINERD.is_file():
        _unavailable(f"{CONTAINERD} is not installed")
    if os.geteuid() != 0:
        _unavailable("a real containerd needs root")
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="pcd-api-ctd-"))
    sock = base / "c.sock"
    config = base / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\naddress = "{sock}"\n'
        f'[ttrpc]\naddress = "{sock}.ttrpc"\n'
    )
    log = (base / "log").open("wb")
    proc = subprocess.Popen(
        [str(CONTAINERD), "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"containerd did not come up: {(base / 'log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield str(sock)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)


async def test_version_and_introspection(containerd_socket: str) -> None:
    import grpc
    from google.protobuf import empty_pb2

    from pycontainerd.api.services.introspection.v1 import (
        introspection_pb2,
        introspection_pb2_grpc,
    )
    from pycontainerd.api.services.version.v1 import version_pb2_grpc

    async with grpc.aio.insecure_channel(f"unix://{containerd_socket}") as channel:
        version = await version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty())
        assert version.version
        intro = introspection_pb2_grpc.IntrospectionStub(channel)
        plugins = await intro.Plugins(introspection_pb2.PluginsRequest())
        by_uri = {f"{p.type}.{p.id}": p for p in plugins.plugins}
        assert "io.containerd.content.v1.content" in by_uri
        # A plugin that failed to load carries a google.rpc.Status.
        assert any(p.init_err.code != 0 and p.init_err.message for p in plugins.plugins)
        server = await intro.Server(empty_pb2.Empty())
        assert server.uuid


async def test_namespaces_and_their_event(containerd_socket: str) -> None:
    import grpc

    from pycontainerd.api.events import namespace_pb2 as namespace_events
    from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
    from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
    from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
    from pycontainerd.api.types import event_pb2

    async with grpc.aio.insecure_channel(f"unix://{containerd_socket}") as channel:
        events = events_pb2_grpc.EventsStub(channel).Subscribe(
            events_pb2.SubscribeRequest(filters=['topic=="/namespaces/create"'])
        )
        namespaces = namespace_pb2_grpc.NamespacesStub(channel)
        await asyncio.wait_for(channel.channel_ready(), timeout=20)
        # The subscription is registered asynchronously: create namespaces
        # until one event arrives (bounded), then check it. One read stays
        # pending throughout: a read cancelled by a timeout cancels the stream.
        received = asyncio.ensure_future(events.read())
        for attempt in range(50):
            request = namespace_pb2.CreateNamespaceRequest(
                namespace=namespace_pb2.Namespace(name=f"pcd-{attempt}", labels={"k": "v"})
            )
            await namespaces.Create(request, metadata=NS_MD)
            await asyncio.wait({received}, timeout=0.2)
            if received.done():
                break
        events.cancel()
        if not received.done():
            received.cancel()
            pytest.fail("no event after 50 namespaces")
        envelope = received.result()
        assert isinstance(envelope, event_pb2.Envelope)
        assert envelope.topic == "/namespaces/create"
        assert envelope.event.type_url == "containerd.events.NamespaceCreate"
        payload = namespace_events.NamespaceCreate.FromString(envelope.event.value)
        assert payload.name.startswith("pcd-")
        assert dict(payload.labels) == {"k": "v"}

        listed = await namespaces.List(namespace_pb2.ListNamespacesRequest(), metadata=NS_MD)
        assert {"pcd-0"} <= {n.name for n in listed.namespaces}
        got = await namespaces.Get(namespace_pb2.GetNamespaceRequest(name="pcd-0"), metadata=NS_MD)
        assert dict(got.namespace.labels) == {"k": "v"}
        containers = containers_pb2_grpc.ContainersStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await containers.Get(containers_pb2.GetContainerRequest(id="nope"), metadata=NS_MD)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
