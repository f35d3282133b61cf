"""Push to a real docker-registry, then pull back."""

from __future__ import annotations

import pytest

from pycontainerd.client.client import Client
from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.remotes.hosts import HostsConfig
from pycontainerd.remotes.progress import Tracker
from pycontainerd.remotes.pull import fetch
from pycontainerd.remotes.push import push
from pycontainerd.remotes.resolver import Resolver
from pycontainerd.remotes.testing import Registry, build_image, build_index

IMAGE = build_image([{"bin/a": b"a" * 10}, {"bin/b": bytes(range(256)) * 400}])
INDEX = build_index(
    {
        "linux/amd64": IMAGE,
        "linux/arm64/v8": build_image([{"x": b"arm"}], architecture="arm64", variant="v8"),
    }
)


REGISTRY_IMAGES = {"src/img:v1": IMAGE, "src/index:v1": INDEX}


def resolver() -> Resolver:
    return Resolver(HostsConfig(default_scheme="http"))


@pytest.mark.parametrize("chunk_size", [0, 50_000])
async def test_push_new_repo_then_pull_back(
    registry: Registry, address: str, namespace: str, chunk_size: int
) -> None:
    src = f"{registry.host}/src/img:v1"
    dst = f"{registry.host}/dst{chunk_size}/{namespace}:v2"
    async with Client(address, namespace) as client, resolver() as res:
        await fetch(client, src, res)
        tracker = Tracker()
        root = await push(client, dst, res, local=src, chunk_size=chunk_size, tracker=tracker)
        assert root.digest == IMAGE.root.digest
        # blobs came from src/img on the same registry: mounted, not uploaded
        statuses = {j.ref.split("-", 1)[0]: j.status for j in tracker.jobs.values()}
        assert statuses["layer"] == "mounted"
        _, desc = await res.resolve(dst)
        assert desc.digest == IMAGE.root.digest


async def test_push_uploads_when_no_source(
    registry: Registry, address: str, namespace: str
) -> None:
    async with Client(address, namespace) as client, resolver() as res:
        src = f"{registry.host}/src/index:v1"
        await fetch(client, src, res, all_platforms=True)
        # forget where the blobs came from, so they must be uploaded
        store = client.content_store()
        from pycontainerd.core import content

        for blob in INDEX.blobs:
            key = "containerd.io/distribution.source.127.0.0.1"
            await store.update(content.Info(digest=blob.digest, labels={}), f"labels.{key}")
        other = f"{registry.host}/up/{namespace}:v1"
        tracker = Tracker()
        await push(client, other, res, local=src, chunk_size=100_000, tracker=tracker)
        layer_statuses = {j.status for j in tracker.jobs.values() if j.ref.startswith("layer-")}
        assert layer_statuses == {"done"}
        # pull it back into another namespace: identical digests
        async with Client(address, namespace + "-b") as back:
            result = await fetch(back, other, res, all_platforms=True)
            assert result.image.target.digest == INDEX.root.digest
            assert {m.descriptor.digest for m in result.manifests} == {
                b.digest for b in INDEX.manifests[:-1]
            }


async def test_push_missing_image(registry: Registry, address: str, namespace: str) -> None:
    async with Client(address, namespace) as client, resolver() as res:
        with pytest.raises(NotFoundError):
            await push(client, f"{registry.host}/x/y:v1", res)
