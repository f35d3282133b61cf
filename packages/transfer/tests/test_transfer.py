"""The Transfer and Streaming services of our daemon, against a real docker-registry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import io
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api import typeurl
from pycontainerd.api.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from pycontainerd.api.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from pycontainerd.api.streams import WINDOW_SIZE, Sender, StreamClosedError
from pycontainerd.api.types import platform_pb2
from pycontainerd.api.types.transfer import imagestore_pb2, importexport_pb2
from pycontainerd.api.types.transfer import streaming_pb2 as stream_types
from pycontainerd.client.client import Client
from pycontainerd.client.transfer import (
    ImageExportStream,
    ImageImportStream,
    ImageStore,
    OCIRegistry,
    Progress,
    _ClientStream,
)
from pycontainerd.core import namespaces
from pycontainerd.core.errdefs import (
    InvalidArgumentError,
    NotFoundError,
    UnauthenticatedError,
    UnimplementedError,
)
from pycontainerd.core.leases import Resource
from pycontainerd.core.platforms import Platform
from pycontainerd.daemon.testing import Daemon, short_tempdir
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.archive import export_images
from pycontainerd.remotes.testing import (
    FaultyBlobServer,
    Registry,
    build_image,
    build_index,
    layer_tar,
    require_registry,
    seeded_registry,
)
from pycontainerd.remotes.unpack import chain_ids

if TYPE_CHECKING:
    from collections.abc import Iterator

IMAGE = build_image([{"bin/hello": b"#!/bin/sh\necho hi\n"}, {"etc/motd": b"welcome\n"}])
DOCKER = build_image([{"etc/docker": b"schema 2\n"}], docker=True)
AMD = build_image([{"arch": b"amd64\n"}])
ARM = build_image([{"arch": b"arm64\n"}], architecture="arm64", variant="v8")
INDEX = build_index({"linux/amd64": AMD, "linux/arm64/v8": ARM})
BIG = build_image([{"blob.bin": random.Random(7).randbytes(4 << 20)}])  # noqa: S311 - filler
MANY = build_image([{f"layer/{i}": bytes([i]) * (20000 + i)} for i in range(8)])
HOST = Platform(os="linux", architecture="amd64")
BOTH = [HOST, Platform(os="linux", architecture="arm64", variant="v8")]
SNAPSHOTTER = "native"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    images = {
        "test/oci:v1": IMAGE,
        "test/docker:v1": DOCKER,
        "test/index:v1": INDEX,
        "test/many:v1": MANY,
        "test/big:v1": BIG,
    }
    with seeded_registry(tmp_path_factory.mktemp("reg"), images) as reg:
        yield reg


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_registry()
    reg = Registry(tmp_path_factory.mktemp("basic"), htpasswd={"alice": "s3cret"})
    with reg.running():
        reg.seed("test/private", "v1", IMAGE, user=("alice", "s3cret"))
        yield reg


def plain(ref: str, **kw: object) -> OCIRegistry:
    return OCIRegistry(ref, default_scheme="http", **kw)  # type: ignore[arg-type]


async def no_leases(client: Client) -> None:
    assert await client.lease_manager().list() == []


async def pull(client: Client, ref: str, **store: object) -> list[Progress]:
    events: list[Progress] = []
    await client.transfer(
        plain(ref),
        ImageStore(ref, unpacks=[(HOST, SNAPSHOTTER)], **store),  # type: ignore[arg-type]
        progress=events.append,
    )
    return events


@pytest.mark.system
@pytest.mark.parametrize(("repo", "image"), [("test/oci", IMAGE), ("test/docker", DOCKER)])
async def test_pull_unpacks_and_records(
    daemon: Daemon, registry: Registry, namespace: str, repo: str, image: object
) -> None:
    ref = f"{registry.host}/{repo}:v1"
    async with Client(daemon.address, namespace) as client:
        events = await pull(client, ref)
        record = await client.image_store().get(ref)
        assert record.target.digest == image.root.digest  # type: ignore[attr-defined]
        top = chain_ids(image.diff_ids)[-1]  # type: ignore[attr-defined]
        info = await client.snapshot_service(SNAPSHOTTER).stat(top)
        assert info.name == top
        for blob in image.blobs:  # type: ignore[attr-defined]
            assert (await client.content_store().info(blob.digest)).size == len(blob.data)
        await no_leases(client)

    kinds = [e.event for e in events if not e.name or e.name == ref]
    assert kinds == [
        f"Resolving from OCI Registry ({ref})",
        f"Pulling from OCI Registry ({ref})",
        "fetching image content",
        "saved",
        f"Completed pull from OCI Registry ({ref})",
    ]
    # every blob: waiting first, complete last, bytes never going back
    blobs = {e.name for e in events if e.name != ref and e.name}
    assert len(blobs) == len(image.blobs) + 1  # type: ignore[attr-defined]
    # the tree: the manifest under the image, its config and layers under the manifest
    manifest = next(n for n in blobs if n.startswith("manifest-"))
    assert {e.parents for e in events if e.name == manifest} == {(ref,)}
    assert {e.parents for e in events if e.name in blobs - {manifest}} == {(manifest,)}
    root = next(e for e in events if e.name == manifest)
    assert (root.digest, root.media_type) == (image.root.digest, image.root.media_type)  # type: ignore[attr-defined]
    for name in blobs:
        mine = [e for e in events if e.name == name]
        assert mine[0].event == "waiting"
        assert mine[-1].event == "complete"
        assert mine[-1].progress == mine[-1].total > 0
        offsets = [e.progress for e in mine]
        assert offsets == sorted(offsets)
    # the image is saved once every blob is complete; a blob event repeats after the end
    saved = events.index(next(e for e in events if e.event == "saved"))
    assert saved > max(i for i, e in enumerate(events[:-1]) if e.event == "complete")
    assert events[-1].event == "complete"


@pytest.mark.system
async def test_pull_index_with_two_platforms(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    ref = f"{registry.host}/test/index:v1"
    async with Client(daemon.address, namespace) as client:
        events = await pull(client, ref, platforms=BOTH)
        assert (await client.image_store().get(ref)).target.digest == INDEX.root.digest
        index = f"index-{INDEX.root.digest}"
        assert {e.parents for e in events if e.name == index} == {(ref,)}
        manifests = {e.name for e in events if e.parents == (index,)}
        assert manifests == {f"manifest-{AMD.root.digest}", f"manifest-{ARM.root.digest}"}
        for blob in INDEX.blobs:
            await client.content_store().info(blob.digest)
        # only the host's platform was unpacked
        await client.snapshot_service(SNAPSHOTTER).stat(chain_ids(AMD.diff_ids)[-1])
        with pytest.raises(NotFoundError):
            await client.snapshot_service(SNAPSHOTTER).stat(chain_ids(ARM.diff_ids)[-1])
        await no_leases(client)


@pytest.mark.system
@pytest.mark.parametrize("first", [0, 1])
async def test_manifest_limit_keeps_the_preferred_platforms(
    daemon: Daemon, registry: Registry, namespace: str, first: int
) -> None:
    # upstream's LimitManifests: sorted by the order of the wanted platforms, then cut
    ref = f"{registry.host}/test/index:v1"
    wanted = BOTH if first == 0 else BOTH[::-1]
    kept, dropped = (AMD, ARM) if first == 0 else (ARM, AMD)
    async with Client(daemon.address, namespace) as client:
        await pull(client, ref, platforms=wanted, manifest_limit=1)
        assert (await client.image_store().get(ref)).target.digest == INDEX.root.digest
        await client.content_store().info(kept.root.digest)
        for blob in kept.blobs:
            await client.content_store().info(blob.digest)
        with pytest.raises(NotFoundError):
            await client.content_store().info(dropped.root.digest)
        await no_leases(client)


@pytest.mark.system
async def test_layers_are_fetched_in_order_three_at_a_time(daemon: Daemon, namespace: str) -> None:
    # as upstream's unpacker: max_concurrent_downloads (3) layers at a time, bottom
    # first, so the lower layers can be applied while the upper ones download. The
    # server holds each layer's answer a moment, so the fetches that run overlap there.
    layers = [b.digest for b in MANY.blobs if b.media_type.endswith("gzip")]
    assert len(layers) == 8
    lock = threading.Lock()
    started: list[str] = []
    holding: set[str] = set()
    most = 0

    def hold(path: str, _attempt: int) -> None:
        nonlocal most
        digest = path.rsplit("/", 1)[-1]
        if digest not in layers:
            return
        with lock:
            started.append(digest)
            holding.add(digest)
            most = max(most, len(holding))
        time.sleep(0.1)  # in the server's thread: it paces the answer
        with lock:
            holding.discard(digest)

    content = {b.digest: b for b in [*MANY.blobs, MANY.root]}
    server = FaultyBlobServer(content, {"v1": MANY.root}, hold)
    server.start()
    try:
        async with Client(daemon.address, namespace) as client:
            await pull(client, f"{server.host}/test/many:v1")
    finally:
        server.stop()
    # a layer is asked for only when every lower one was and at most two are still
    # running, so never before one three or more places below it
    assert sorted(started) == sorted(layers)
    pos = {digest: started.index(digest) for digest in layers}
    for i, lower in enumerate(layers):
        for upper in layers[i + 3 :]:
            assert pos[lower] < pos[upper]
    assert 2 <= most <= 3


@pytest.mark.system
async def test_second_pull_reports_existing_blobs(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    ref = f"{registry.host}/test/oci:v1"
    async with Client(daemon.address, namespace) as client:
        await pull(client, ref)
        events = await pull(client, ref)
    layers = {e.name for e in events if e.name.startswith("layer-")}
    assert layers
    for name in layers:
        assert [e.event for e in events if e.name == name][-1] == "already exists"


@pytest.mark.system
async def test_push_then_pull_back_same_digests(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    src = f"{registry.host}/test/oci:v1"
    dst = f"{registry.host}/pushed/oci:v2"
    async with Client(daemon.address, namespace) as client:
        await pull(client, src)
        events: list[Progress] = []
        await client.transfer(ImageStore(src), plain(dst), progress=events.append)
        statuses = [e.event for e in events if not e.name]
        assert statuses == [
            f"Pushing to OCI Registry ({dst})",
            f"Completed push to OCI Registry ({dst})",
        ]
        # a named event follows the final status, so containerd 2.x's ctr redraws with it
        assert events[-1].name
        await client.transfer(plain(dst), ImageStore("pulled-back"))
        back = await client.image_store().get("pulled-back")
        assert back.target.digest == IMAGE.root.digest
        await no_leases(client)


@pytest.mark.system
async def test_export_matches_client_export_and_imports_back(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    ref = f"{registry.host}/test/oci:v1"
    async with Client(daemon.address, namespace) as client:
        await pull(client, ref)
        served = io.BytesIO()
        await client.transfer(ImageStore(ref), ImageExportStream(served, platforms=[HOST]))
        local = io.BytesIO()
        await export_images(client, local, [ref])
        assert served.getvalue() == local.getvalue()
        assert len(served.getvalue()) > 0

    other = namespace + "-imp"
    async with Client(daemon.address, other) as client:
        served.seek(0)
        await client.transfer(
            ImageImportStream(served),
            ImageStore("imported:index", unpacks=[(HOST, SNAPSHOTTER)]),
        )
        assert (await client.image_store().get(ref)).target.digest == IMAGE.root.digest
        await client.snapshot_service(SNAPSHOTTER).stat(chain_ids(IMAGE.diff_ids)[-1])
        await no_leases(client)


class _StalledOut(io.BytesIO):
    """An export's destination that takes one chunk, then waits until ``go`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.first = threading.Event()
        self.go = threading.Event()

    def write(self, data: Any) -> int:
        n = super().write(data)
        self.first.set()
        self.go.wait(60)
        return n


def _spool_files(pid: int) -> list[str]:
    """The daemon's open files in the temporary directory that are already unlinked."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
            found.append(target)
    return found


async def _held_without_spool(
    held: threading.Event, go: threading.Event, transfer: asyncio.Task[None], pid: int
) -> None:
    """Once the client holds (``held``): the transfer waits and the daemon keeps no spool."""
    try:
        await asyncio.to_thread(held.wait, 30)
        assert not transfer.done()
        assert _spool_files(pid) == []
    finally:
        go.set()
    await transfer


@pytest.mark.system
async def test_a_pull_leases_the_blobs_it_finds(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    # the daemon's pull skips a blob the namespace has and counts on it: its lease holds it
    ref = f"{registry.host}/test/oci:v1"
    async with Client(daemon.address, namespace) as client:
        keep = await client.lease_manager().create("keep-first-pull")
        with namespaces.with_lease(keep.id):
            await pull(client, ref)
        await client.image_store().delete(ref)
        async with client.with_lease() as lease:
            await pull(client, ref)
            held = await client.lease_manager().list_resources(lease)
        await client.lease_manager().delete(keep.id)
    for blob in [IMAGE.root, *IMAGE.blobs]:
        assert Resource(id=blob.digest, type="content") in held, blob.media_type


@pytest.mark.system
async def test_export_streams_at_the_clients_pace_without_a_spool_file(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    ref = f"{registry.host}/test/big:v1"
    assert daemon.proc is not None
    async with Client(daemon.address, namespace) as client:
        await pull(client, ref)
        out = _StalledOut()
        export = asyncio.create_task(
            client.transfer(ImageStore(ref), ImageExportStream(out, platforms=[HOST]))
        )
        # the client holds its window: the daemon waits, with no copy of the archive aside
        await _held_without_spool(out.first, out.go, export, daemon.proc.pid)
        local = io.BytesIO()
        await export_images(client, local, [ref])
        assert out.getvalue() == local.getvalue()
        assert len(out.getvalue()) > 4 << 20
        await no_leases(client)


@pytest.mark.system
async def test_a_short_export_ends_only_after_the_clients_grant(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    """The archive fits the first window; the end waits for the grant after the first read.

    A client grants again whenever its window falls below a whole one. Ending
    before that grant has come would race it, and a Python client whose grant
    loses the race (grpc.aio fails the whole call) loses the unread messages.
    """
    ref = f"{registry.host}/test/oci:v1"
    async with Client(daemon.address, namespace) as client:
        await pull(client, ref)
        local = io.BytesIO()
        await export_images(client, local, [ref])
        assert len(local.getvalue()) < WINDOW_SIZE
        stream = await _ClientStream.open(client, "short-export")
        stub = transfer_pb2_grpc.TransferStub(client.channel)
        req = transfer_pb2.TransferRequest(
            source=typeurl.pack(imagestore_pb2.ImageStore(name=ref)),
            destination=typeurl.pack(
                importexport_pb2.ImageExportStream(
                    stream="short-export",
                    platforms=[platform_pb2.Platform(os="linux", architecture="amd64")],
                )
            ),
        )
        call = asyncio.ensure_future(stub.Transfer(req, metadata=client.metadata()))
        grant = typeurl.pack(stream_types.WindowUpdate(update=WINDOW_SIZE))
        await stream.send(grant)
        got = [typeurl.unpack_as(await stream.recv(), stream_types.Data).data]
        done, _ = await asyncio.wait([call], timeout=0.5)
        assert not done  # everything is sent, but the stream stays open for the grant
        await stream.send(grant)
        with contextlib.suppress(StreamClosedError):
            while True:
                got.append(typeurl.unpack_as(await stream.recv(), stream_types.Data).data)
        await call
        stream.cancel()
        assert b"".join(got) == local.getvalue()


class _StalledIn(io.BytesIO):
    """An import's source that gives one read's worth, then waits until ``go`` is set.

    ``first`` is set when the second read comes: the first one's data has been
    sent, within the daemon's window, so the daemon has most of it.
    """

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.first = threading.Event()
        self.go = threading.Event()
        self._reads = 0

    def read(self, n: int | None = -1) -> bytes:
        self._reads += 1
        if self._reads == 2:
            self.first.set()
            self.go.wait(60)
        return super().read(n)


@pytest.mark.system
async def test_import_reads_the_stream_as_it_comes_without_a_spool_file(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    ref = f"{registry.host}/test/big:v1"
    assert daemon.proc is not None
    async with Client(daemon.address, namespace) as client:
        await pull(client, ref)
        archive = io.BytesIO()
        await export_images(client, archive, [ref])
    other = namespace + "-in"
    async with Client(daemon.address, other) as client:
        source = _StalledIn(archive.getvalue())
        task = asyncio.create_task(
            client.transfer(ImageImportStream(source), ImageStore("imported:big"))
        )
        # the first read's data is in, the rest held back: no copy set aside in the daemon
        await _held_without_spool(source.first, source.go, task, daemon.proc.pid)
        assert (await client.image_store().get(ref)).target.digest == BIG.root.digest
        await no_leases(client)


@pytest.mark.system
async def test_tag(daemon: Daemon, registry: Registry, namespace: str) -> None:
    ref = f"{registry.host}/test/oci:v1"
    async with Client(daemon.address, namespace) as client:
        await client.transfer(plain(ref), ImageStore(ref))
        await client.transfer(ImageStore(ref), ImageStore("example.test/tagged:v1"))
        tagged = await client.image_store().get("example.test/tagged:v1")
        assert tagged.target.digest == IMAGE.root.digest


@pytest.mark.system
async def test_credentials_come_from_the_callback(
    daemon: Daemon, private: Registry, namespace: str
) -> None:
    ref = f"{private.host}/test/private:v1"
    asked: list[str] = []

    def creds(host: str) -> tuple[str, str]:
        asked.append(host)
        return "alice", "s3cret"

    async with Client(daemon.address, namespace) as client:
        with pytest.raises(UnauthenticatedError, match="failed to resolve image: "):
            await client.transfer(plain(ref), ImageStore(ref))
        await client.transfer(plain(ref, credentials=creds), ImageStore(ref))
        assert asked
        assert set(asked) == {private.host}
        assert (await client.image_store().get(ref)).target.digest == IMAGE.root.digest
        # a push uploads blobs concurrently: requests sent before the registry's first
        # challenge was known are retried with the credentials, not taken as refused
        pushed = f"{private.host}/test/pushed:v1"
        await client.transfer(ImageStore(ref), plain(pushed, credentials=creds))
        await client.transfer(plain(pushed, credentials=creds), ImageStore("back:v1"))
        assert (await client.image_store().get("back:v1")).target.digest == IMAGE.root.digest
        await no_leases(client)


@pytest.mark.system
async def test_unknown_types_are_invalid_arguments(daemon: Daemon, namespace: str) -> None:
    async with Client(daemon.address, namespace) as client:
        stub = transfer_pb2_grpc.TransferStub(client.channel)
        req = transfer_pb2.TransferRequest(
            source=any_pb2.Any(type_url="example.test/NoSuchSource", value=b""),
            destination=typeurl.pack(imagestore_pb2.ImageStore(name="x")),
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Transfer(req, metadata=client.metadata())
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "example.test/NoSuchSource" in (info.value.details() or "")

        with pytest.raises(
            UnimplementedError,
            match=re.escape(
                "method Transfer not implemented for containerd.types.transfer.OCIRegistry "
                "to containerd.types.transfer.OCIRegistry"
            ),
        ):
            await client.transfer(OCIRegistry("example.test/a:1"), OCIRegistry("example.test/b:1"))

        with pytest.raises(InvalidArgumentError, match="NoSuchDestination"):
            await client.transfer(
                ImageStore("x"),
                any_pb2.Any(type_url="example.test/NoSuchDestination"),
            )


@pytest.mark.system
async def test_pull_of_missing_reference(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    ref = f"{registry.host}/test/none:v1"
    async with Client(daemon.address, namespace) as client:
        with pytest.raises(NotFoundError, match=f"failed to resolve image: {ref}: not found"):
            await client.transfer(plain(ref), ImageStore(ref))
        await no_leases(client)


@pytest.mark.system
async def test_export_of_missing_image(daemon: Daemon, namespace: str) -> None:
    async with Client(daemon.address, namespace) as client:
        out = io.BytesIO()
        with pytest.raises(NotFoundError):
            await client.transfer(ImageStore("example.test/missing:v1"), ImageExportStream(out))
        await no_leases(client)


def docker_save(name: str, files: dict[str, bytes]) -> tuple[bytes, str]:
    """A ``docker save`` archive with one uncompressed layer, and the layer's digest."""
    import hashlib
    import json
    import tarfile

    layer = layer_tar(files)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        [{"Config": "config.json", "RepoTags": [name], "Layers": ["layer/layer.tar"]}]
    ).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path, data in (
            ("config.json", config),
            ("layer/layer.tar", layer),
            ("manifest.json", manifest),
        ):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue(), diff_id


async def _layer_of(client: Client, name: str) -> dict[str, object]:
    import json

    from pycontainerd.core import content

    image = await client.image_store().get(name)
    target = image.target
    if target.media_type.endswith("index.v1+json"):
        index = json.loads(await content.read_blob(client.content_store(), target.digest))
        target_digest = index["manifests"][0]["digest"]
    else:
        target_digest = target.digest
    manifest = json.loads(await content.read_blob(client.content_store(), target_digest))
    layer: dict[str, object] = manifest["layers"][0]
    return layer


@pytest.mark.system
@pytest.mark.parametrize("force", [False, True])
async def test_import_force_compress(daemon: Daemon, namespace: str, force: bool) -> None:
    import gzip

    from pycontainerd.core import content

    name = f"example.test/forced:{int(force)}"
    archive, diff_id = docker_save(name, {"etc/forced": b"compress me\n" * 100})
    async with Client(daemon.address, namespace) as client:
        await client.transfer(
            ImageImportStream(io.BytesIO(archive), force_compress=force),
            ImageStore("", unpacks=[(HOST, SNAPSHOTTER)]),
        )
        layer = await _layer_of(client, name)
        store = client.content_store()
        if not force:
            assert (layer["mediaType"], layer["digest"]) == (mt.DOCKER_LAYER, diff_id)
        else:
            # a new gzip blob, labelled with the tar's digest, named by the manifest
            assert layer["mediaType"] == mt.DOCKER_LAYER_GZIP
            assert layer["digest"] != diff_id
            blob = await content.read_blob(store, str(layer["digest"]))
            assert len(blob) == layer["size"]
            assert "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest() == diff_id
            info = await store.info(str(layer["digest"]))
            assert info.labels[mt.UNCOMPRESSED_LABEL] == diff_id
        # unpacked either way (the diff ID is the tar's)
        await client.snapshot_service(SNAPSHOTTER).stat(chain_ids([diff_id])[-1])
        await no_leases(client)


@pytest.mark.system
async def test_import_media_type_means_a_plain_tar(daemon: Daemon, namespace: str) -> None:
    import gzip

    name = "example.test/zipped:v1"
    archive, _ = docker_save(name, {"etc/zipped": b"zipped\n"})
    zipped = gzip.compress(archive, mtime=0)
    async with Client(daemon.address, namespace) as client:
        # no media type: a compressed archive is read through, as upstream
        await client.transfer(ImageImportStream(io.BytesIO(zipped)), ImageStore(""))
        assert (await client.image_store().get(name)).name == name
        await client.image_store().delete(name)
        # a media type: the stream is a tar as it is; gzip bytes are not one
        with pytest.raises(InvalidArgumentError):
            await client.transfer(
                ImageImportStream(io.BytesIO(zipped), media_type="application/x-tar"),
                ImageStore(""),
            )
        await client.transfer(
            ImageImportStream(io.BytesIO(archive), media_type="application/x-tar"), ImageStore("")
        )
        assert (await client.image_store().get(name)).name == name
        await no_leases(client)


@pytest.mark.system
async def test_http_debug_dumps_to_the_logs_stream(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    # as containerd 2.x's `ctr images pull --http-dump`: requests and responses
    # come back over the logs stream, which ends with the transfer
    import asyncio

    from pycontainerd.api.streams import Receiver
    from pycontainerd.api.types.transfer import registry_pb2

    ref = f"{registry.host}/test/oci:v1"
    async with Client(daemon.address, namespace) as client:
        logs = await _ClientStream.open(client, "http-logs")
        receiver = Receiver(logs)

        async def read_all() -> bytes:
            out = bytearray()
            while chunk := await receiver.chunk():
                out += chunk
            return bytes(out)

        reading = asyncio.ensure_future(read_all())
        resolver = registry_pb2.RegistryResolver(
            default_scheme="http", http_debug=registry_pb2.DEBUG, logs_stream="http-logs"
        )
        req = transfer_pb2.TransferRequest(
            source=typeurl.pack(registry_pb2.OCIRegistry(reference=ref, resolver=resolver)),
            destination=typeurl.pack(imagestore_pb2.ImageStore(name=ref)),
        )
        await transfer_pb2_grpc.TransferStub(client.channel).Transfer(
            req, metadata=client.metadata()
        )
        dump = (await asyncio.wait_for(reading, 30)).decode()
        assert "HEAD /v2/test/oci/manifests/v1 HTTP/1.1\r\n" in dump
        assert f"\r\nHost: {registry.host}\r\n" in dump
        # (blobs another test pulled into the shared content store are not fetched)
        assert f"GET /v2/test/oci/manifests/{IMAGE.root.digest} HTTP/1.1" in dump
        assert "HTTP/1.1 200 OK\r\n" in dump
        assert (await client.image_store().get(ref)).target.digest == IMAGE.root.digest
        await no_leases(client)


@pytest.mark.system
async def test_stream_closed_mid_import_leaves_nothing(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    ref = f"{registry.host}/test/oci:v1"
    async with Client(daemon.address, namespace) as client:
        await pull(client, ref)
        archive = io.BytesIO()
        await export_images(client, archive, [ref])
    other = namespace + "-cut"
    async with Client(daemon.address, other) as client:
        stream = await _ClientStream.open(client, "cut-import")
        sender = Sender(stream)
        data = archive.getvalue()
        stub = transfer_pb2_grpc.TransferStub(client.channel)
        req = transfer_pb2.TransferRequest(
            source=typeurl.pack(importexport_pb2.ImageImportStream(stream="cut-import")),
            destination=typeurl.pack(imagestore_pb2.ImageStore(name="cut:v1")),
        )
        call = stub.Transfer(req, metadata=client.metadata())
        await sender.write(data[: len(data) // 2])
        await sender.close()
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        assert await client.image_store().list() == []
        await no_leases(client)


@pytest.mark.system
async def test_stream_ids_are_unique_per_namespace(daemon: Daemon, namespace: str) -> None:
    async with Client(daemon.address, namespace) as client:
        first = await _ClientStream.open(client, "same-id")
        stub = streaming_pb2_grpc.StreamingStub(client.channel)
        call = stub.Stream(metadata=client.metadata())
        await call.write(typeurl.pack(streaming_pb2.StreamInit(id="same-id")))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call.read()
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        first.cancel()


def _imported(log: str, module: str) -> bool:
    """Whether ``-X importtime`` output in ``log`` records an import of ``module``."""
    return re.search(rf"^import time:.*\|\s+{re.escape(module)}$", log, re.MULTILINE) is not None


@pytest.mark.system
async def test_registry_stack_loads_on_the_first_pull_not_at_boot(
    daemon: Daemon, registry: Registry, namespace: str
) -> None:
    # the resolver and its modules are some MiB resident: a daemon that never pulls
    # must not carry them, and the first pull must still work.
    env = {**daemon.env, "PYTHONPROFILEIMPORTTIME": "1"}  # the same plugins, imports logged
    with short_tempdir("ptw") as base, Daemon(base, env=env) as fresh:
        assert _imported(fresh.log(), "pycontainerd.transfer.local")  # the probe sees imports
        # (the warm-up's import_module of the resolver is not logged; what it imports is)
        assert not _imported(fresh.log(), "pycontainerd.remotes._direct")
        async with Client(fresh.address, namespace) as client:
            await pull(client, f"{registry.host}/test/oci:v1")
        assert _imported(fresh.log(), "pycontainerd.remotes._direct")
        # a pull only reads, on the direct connections: not httpx (nor its command-line
        # client, which brings rich where it is installed), httpcore, h11 or anyio, nor
        # the HTTP/2 library httpcore would load to offer HTTP/2 (a test dependency here)
        for unused in ("httpx", "httpcore", "h11", "anyio", "h2"):
            assert importlib.util.find_spec(unused) is not None, f"{unused} is installed here"
            assert not _imported(fresh.log(), unused), unused
        assert not _imported(fresh.log(), "rich")
        assert not _imported(fresh.log(), "urllib.request")


def test_a_trimmed_registry_stack_stops_searching_for_sniffio() -> None:
    # httpcore tries ``import sniffio`` for every lock and event it sets up; where
    # sniffio is not installed each try searched the whole sys.path again.
    assert importlib.util.find_spec("sniffio") is None, "sniffio is not installed here"
    probe = """
import importlib.machinery, sys
from httpcore import _synchronization
from pycontainerd.transfer.local import trim_registry_stack

searches = 0
find_spec = importlib.machinery.PathFinder.find_spec

def counting(*args, **kwargs):
    global searches
    searches += 1
    return find_spec(*args, **kwargs)

importlib.machinery.PathFinder.find_spec = counting
for _ in range(10):
    assert _synchronization.current_async_library() == "asyncio"
before = searches
trim_registry_stack()
before_tries = searches
for _ in range(10):
    assert _synchronization.current_async_library() == "asyncio"
print(before, searches - before_tries)
"""
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "10"  # a path search per try before
    assert out[1] == "0"  # none after


async def _open_stream(client: Client, name: str, lease: str = "") -> Any:
    stub = streaming_pb2_grpc.StreamingStub(client.channel)
    md = [*client.metadata(), *((("containerd-lease", lease),) if lease else ())]
    call = stub.Stream(metadata=md)
    await call.write(typeurl.pack(streaming_pb2.StreamInit(id=name)))
    await call.read()  # the acknowledgement
    return call


@pytest.mark.system
async def test_a_lease_holds_its_streams(daemon: Daemon, namespace: str) -> None:
    # upstream: a stream opened under a lease is collected with it; one without stays
    import asyncio

    async with Client(daemon.address, namespace) as client:
        lease = await client.lease_manager().create()
        held = await _open_stream(client, "held", lease.id)
        free = await _open_stream(client, "free")
        await client.lease_manager().delete(lease.id)
        # the daemon closes the held stream: its call ends without error
        end = await asyncio.wait_for(held.read(), 30)
        assert end is grpc.aio.EOF
        assert await held.code() == grpc.StatusCode.OK
        # the other one is still registered: its name is taken
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _open_stream(client, "free")
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # and the held one's name is free again
        again = await _open_stream(client, "held")
        again.cancel()
        free.cancel()
