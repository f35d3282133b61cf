"""Pull from a real docker-registry into a real containerd and into our daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.client import Client
from pycontainerd.core import content, namespaces, platforms
from pycontainerd.core.errdefs import DataLossError, NotFoundError, UnavailableError
from pycontainerd.core.leases import Resource
from pycontainerd.core.snapshots import Kind
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.hosts import HostsConfig
from pycontainerd.remotes.progress import Tracker
from pycontainerd.remotes.pull import fetch, pull
from pycontainerd.remotes.resolver import Resolver
from pycontainerd.remotes.testing import (
    FaultyBlobServer,
    Image,
    Registry,
    build_image,
    build_index,
)
from pycontainerd.remotes.unpack import chain_ids

if TYPE_CHECKING:
    from collections.abc import Iterator

IMAGE = build_image(
    [{"bin/hello": b"#!/bin/sh\necho hello\n"}, {"etc/motd": b"welcome\n"}, {"etc/x": b"x" * 5000}]
)
AMD = build_image([{"arch": b"amd64\n"}])
ARM = build_image([{"arch": b"arm64\n"}], architecture="arm64", variant="v8")
INDEX = build_index({"linux/amd64": AMD, "linux/arm64/v8": ARM})
REGISTRY_IMAGES = {"test/multi:v1": IMAGE, "test/index:v1": INDEX}


def resolver() -> Resolver:
    return Resolver(HostsConfig(default_scheme="http"))


async def labels_of(client: Client, dgst: str) -> dict[str, str]:
    return dict((await client.content_store().info(dgst)).labels)


async def test_pull_multi_layer_image(registry: Registry, address: str, namespace: str) -> None:
    ref = f"{registry.host}/test/multi:v1"
    async with Client(address, namespace) as client, resolver() as res:
        tracker = Tracker()
        result = await pull(client, ref, res, tracker=tracker, snapshotter="native")
        assert result.image.name == ref
        assert result.image.target.digest == IMAGE.root.digest
        image = await client.image_store().get(ref)
        assert image.target.digest == IMAGE.root.digest
        top = chain_ids(IMAGE.diff_ids)[-1]
        assert result.chain_ids == {IMAGE.root.digest: top}
        # labels the way containerd's pull writes them
        layers, config = IMAGE.blobs[:-1], IMAGE.blobs[-1]
        source = {"containerd.io/distribution.source.127.0.0.1": "test/multi"}
        manifest_labels = await labels_of(client, IMAGE.root.digest)
        assert manifest_labels == {
            "containerd.io/gc.ref.content.config": config.digest,
            **{f"containerd.io/gc.ref.content.l.{i}": b.digest for i, b in enumerate(layers)},
            **source,
        }
        assert await labels_of(client, config.digest) == {
            **source,
            "containerd.io/gc.ref.snapshot.native": top,
        }
        for blob, diff_id in zip(layers, IMAGE.diff_ids, strict=True):
            assert await labels_of(client, blob.digest) == {
                **source,
                mt.UNCOMPRESSED_LABEL: diff_id,
            }
        sn = client.snapshot_service("native")
        info = await sn.stat(top)
        assert info.name == top
        # the pull's lease is gone
        assert await client.lease_manager().list() == []
        assert {j.status for j in tracker.jobs.values() if j.ref.startswith("layer-")} == {"done"}
        # pulling again finds everything present
        tracker2 = Tracker()
        await pull(client, ref, res, tracker=tracker2, snapshotter="native")
        assert {j.status for j in tracker2.jobs.values() if j.ref.startswith("layer-")} == {
            "exists"
        }


async def test_a_pull_leases_the_blobs_it_finds(
    registry: Registry, address: str, namespace: str
) -> None:
    """A blob the namespace has already is held by the pull's lease, not just skipped.

    The pull does not download it and counts on it until the manifest's labels
    and the image reference it; were it not in the pull's lease, a collection
    in between could remove it (say, one an ``images rm`` just triggered). A
    lease of the test's keeps the first copies, so the outcome does not depend
    on when the collector runs.
    """
    ref = f"{registry.host}/test/multi:v1"
    async with Client(address, namespace) as client, resolver() as res:
        keep = await client.lease_manager().create("keep-first-fetch")
        with namespaces.with_lease(keep.id):
            await fetch(client, ref, res, create_image=False)
        async with client.with_lease() as lease:
            tracker = Tracker()
            await pull(client, ref, res, tracker=tracker, snapshotter="native")
            held = await client.lease_manager().list_resources(lease)
        await client.lease_manager().delete(keep.id)
    assert {j.status for j in tracker.jobs.values() if j.ref.startswith("layer-")} == {"exists"}
    for blob in [IMAGE.root, *IMAGE.blobs]:
        assert Resource(id=blob.digest, type="content") in held, blob.media_type


async def test_pull_index_platforms(registry: Registry, address: str, namespace: str) -> None:
    ref = f"{registry.host}/test/index:v1"
    async with Client(address, namespace) as client, resolver() as res:
        result = await fetch(client, ref, res, platforms=[platforms.parse("linux/amd64")])
        assert [m.descriptor.digest for m in result.manifests] == [AMD.root.digest]
        store = client.content_store()
        with pytest.raises(NotFoundError):
            await store.info(ARM.root.digest)
        index_labels = await labels_of(client, INDEX.root.digest)
        assert index_labels["containerd.io/gc.ref.content.m.0"] == AMD.root.digest

        result = await fetch(client, ref, res, platforms=[platforms.parse("linux/arm64")])
        assert [m.descriptor.digest for m in result.manifests] == [ARM.root.digest]
        assert await content.read_blob(store, ARM.blobs[0].digest) == ARM.blobs[0].data

        result = await fetch(client, ref, res, all_platforms=True)
        assert {m.descriptor.digest for m in result.manifests} == {
            AMD.root.digest,
            ARM.root.digest,
        }


async def present(store: content.Store, dgst: str) -> bool:
    try:
        await store.info(dgst)
    except NotFoundError:
        return False
    return True


async def test_fetch_all_metadata_and_metadata_only(
    registry: Registry, address: str, namespace: str
) -> None:
    """--all-metadata: every platform's manifest and config, layers of the wanted one only;
    --metadata-only: manifests and configs, no layers (upstream's FilterManifestByPlatform)."""
    ref = f"{registry.host}/test/index:v1"
    amd_layers, amd_config = AMD.blobs[:-1], AMD.blobs[-1]
    arm_layers, arm_config = ARM.blobs[:-1], ARM.blobs[-1]
    async with Client(address, namespace) as client, resolver() as res:
        store = client.content_store()
        result = await fetch(
            client, ref, res, platforms=[platforms.parse("linux/amd64")], all_metadata=True
        )
        assert [m.descriptor.digest for m in result.manifests] == [AMD.root.digest]
        for blob in (AMD.root, amd_config, *amd_layers, ARM.root, arm_config):
            assert await present(store, blob.digest), blob.digest
        for blob in arm_layers:
            assert not await present(store, blob.digest)
        index_labels = await labels_of(client, INDEX.root.digest)
        assert {v for k, v in index_labels.items() if ".m." in k} == {
            AMD.root.digest,
            ARM.root.digest,
        }

    async with Client(address, f"{namespace}-meta") as client, resolver() as res:
        store = client.content_store()
        result = await fetch(client, ref, res, metadata_only=True)
        assert result.manifests == []
        for blob in (INDEX.root, AMD.root, amd_config, ARM.root, arm_config):
            assert await present(store, blob.digest), blob.digest
        for blob in (*amd_layers, *arm_layers):
            assert not await present(store, blob.digest)
        images = await client.image_store().list()
        assert [i.target.digest for i in images] == [INDEX.root.digest]


async def test_pull_unknown_platform(registry: Registry, address: str, namespace: str) -> None:
    async with Client(address, namespace) as client, resolver() as res:
        with pytest.raises(NotFoundError, match="no match for platform linux/s390x"):
            await fetch(
                client,
                f"{registry.host}/test/index:v1",
                res,
                platforms=[platforms.parse("linux/s390x")],
            )
        with pytest.raises(NotFoundError):
            await client.image_store().get(f"{registry.host}/test/index:v1")


# -- bad registries: nothing half-committed -------------------------------------------------


@contextlib.contextmanager
def _faulty(size: int, fault: str, times: int) -> Iterator[tuple[Image, FaultyBlobServer, str]]:
    """A one-layer image of ``size`` random bytes, served with ``fault`` on its first
    ``times`` blob requests: the image, the server and the image's reference."""
    image = build_image([{"f": os.urandom(size)}])

    def hook(path: str, n: int) -> str | None:
        return fault if "/blobs/" in path and n <= times else None

    blobs = {b.digest: b for b in [*image.blobs, image.root]}
    server = FaultyBlobServer(blobs, {"v1": image.root}, hook).start()
    try:
        yield image, server, f"{server.host}/bad/img:v1"
    finally:
        server.stop()


@pytest.mark.parametrize("address", ["ours"], indirect=True)
async def test_corrupt_blob_leaves_nothing(address: str, namespace: str) -> None:
    with _faulty(200_000, "corrupt", 100) as (image, _, ref):
        async with Client(address, namespace) as client, resolver() as res:
            with pytest.raises(DataLossError, match="digest mismatch"):
                await pull(client, ref, res, snapshotter="native")
            store = client.content_store()
            with pytest.raises(NotFoundError):
                await client.image_store().get(ref)
            with pytest.raises(NotFoundError):
                await store.info(image.blobs[0].digest)
            assert [s.ref for s in await store.list_statuses()] == []
            assert await client.lease_manager().list() == []


@pytest.mark.parametrize("address", ["ours"], indirect=True)
async def test_dropped_connection_resumes(address: str, namespace: str) -> None:
    with _faulty(300_000, "drop", 1) as (image, server, ref):
        async with Client(address, namespace) as client, resolver() as res:
            res.backoff = 0.01
            await pull(client, ref, res, unpack_layers=False)
            layer = image.blobs[0]
            assert await content.read_blob(client.content_store(), layer.digest) == layer.data
            assert any(r != "bytes=0-" for r in server.ranges)


@pytest.mark.parametrize("address", ["ours"], indirect=True)
async def test_registry_that_keeps_dropping_fails_cleanly(address: str, namespace: str) -> None:
    with _faulty(300_000, "drop", 1000) as (image, _, ref):
        async with Client(address, namespace) as client:
            res = Resolver(HostsConfig(default_scheme="http"), retries=1, backoff=0.01)
            async with res:
                with pytest.raises(UnavailableError, match="failed at byte"):
                    await pull(client, ref, res, unpack_layers=False)
            with pytest.raises(NotFoundError):
                await client.image_store().get(ref)
            with pytest.raises(NotFoundError):
                await client.content_store().info(image.blobs[0].digest)
            assert await client.lease_manager().list() == []


def test_chain_ids() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    ids = chain_ids([a, b])
    assert ids[0] == a
    import hashlib

    assert ids[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert json.dumps(ids)
    assert namespaces.namespace() is None


# -- unpacking while fetching -----------------------------------------------------------------


def _serve_stalling(image: Image, stalled: str) -> FaultyBlobServer:
    """A registry that hangs half-way through the blob ``stalled``."""

    def hook(path: str, n: int) -> str | None:
        return "stall" if path.endswith(stalled) else None

    return FaultyBlobServer(
        {b.digest: b for b in [*image.blobs, image.root]}, {"v1": image.root}, hook
    ).start()


async def _wait_committed(client: Client, chain: str, task: asyncio.Task[object]) -> None:
    sn = client.snapshot_service("native")
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        assert not task.done(), "the pull ended before its lower layer was unpacked"
        try:
            await sn.stat(chain)
        except NotFoundError:
            pass
        else:
            return
        assert asyncio.get_running_loop().time() < deadline, f"{chain} was never committed"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("address", ["ours", "containerd"], indirect=True)
async def test_lower_layers_unpack_while_upper_fetch(address: str, namespace: str) -> None:
    image = build_image([{"low": b"low\n"}, {"high": os.urandom(300_000)}])
    upper = image.blobs[1]
    server = _serve_stalling(image, upper.digest)
    ref = f"{server.host}/slow/img:v1"
    chains = chain_ids(image.diff_ids)
    try:
        async with Client(address, namespace) as client, resolver() as res:
            task = asyncio.create_task(pull(client, ref, res, snapshotter="native"))
            # the bottom layer is committed while the top one is still downloading
            await _wait_committed(client, chains[0], task)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # cancelled: no image, no active snapshot, no ingest, no lease
            with pytest.raises(NotFoundError):
                await client.image_store().get(ref)
            kinds = [s.kind async for s in client.snapshot_service("native").walk()]
            assert Kind.ACTIVE not in kinds
            with pytest.raises(NotFoundError):
                await client.snapshot_service("native").stat(chains[1])
            assert [s.ref for s in await client.content_store().list_statuses()] == []
            assert await client.lease_manager().list() == []
    finally:
        server.stop()
