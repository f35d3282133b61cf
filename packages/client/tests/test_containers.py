"""Reading an image's manifest and config for a container: malformed documents are refused."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.client import Client
from pycontainerd.client.containers import image_config, image_manifest
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.images import Image
from pycontainerd.core.types import Descriptor

if TYPE_CHECKING:
    from pycontainerd.daemon.testing import Daemon

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


async def _put(client: Client, data: bytes, media_type: str) -> Descriptor:
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    writer = await client.content_store().writer(f"test-{dgst}", total=len(data), expected=dgst)
    await writer.write(data)
    await writer.commit(len(data), dgst)
    return Descriptor(media_type=media_type, digest=dgst, size=len(data))


async def test_index_whose_manifests_is_not_a_list(ours: Daemon, namespace: str) -> None:
    async with Client(ours.address, namespace) as client, client.with_lease():
        index = await _put(client, json.dumps({"manifests": {"a": 1}}).encode(), INDEX)
        with pytest.raises(InvalidArgumentError, match="manifests is not a list"):
            await image_manifest(client, Image(name="x", target=index))


async def test_index_entry_without_digest(ours: Daemon, namespace: str) -> None:
    async with Client(ours.address, namespace) as client, client.with_lease():
        index = await _put(client, json.dumps({"manifests": [{"size": 1}]}).encode(), INDEX)
        with pytest.raises(InvalidArgumentError, match="descriptor needs mediaType, digest"):
            await image_manifest(client, Image(name="x", target=index))


async def test_manifest_that_is_not_json(ours: Daemon, namespace: str) -> None:
    async with Client(ours.address, namespace) as client, client.with_lease():
        manifest = await _put(client, b"{not json", MANIFEST)
        with pytest.raises(InvalidArgumentError, match="invalid JSON"):
            await image_config(client, manifest)


async def test_config_fields(ours: Daemon, namespace: str) -> None:
    async with Client(ours.address, namespace) as client, client.with_lease():
        doc = {
            "config": {"Env": ["A=1"], "Cmd": ["sh"], "WorkingDir": "/w", "StopSignal": "SIGQUIT"},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]},
        }
        cfg = await _put(client, json.dumps(doc).encode(), CONFIG)
        body = {"schemaVersion": 2, "config": _json(cfg), "layers": []}
        manifest = await _put(client, json.dumps(body).encode(), MANIFEST)
        got = await image_config(client, manifest)
        assert got.env == ("A=1",)
        assert got.cmd == ("sh",)
        assert got.working_dir == "/w"
        assert got.stop_signal == "SIGQUIT"
        assert got.chain_id == "sha256:" + "a" * 64


async def test_config_that_is_a_list(ours: Daemon, namespace: str) -> None:
    async with Client(ours.address, namespace) as client, client.with_lease():
        cfg = await _put(client, b"[]", CONFIG)
        body = {"schemaVersion": 2, "config": _json(cfg), "layers": []}
        manifest = await _put(client, json.dumps(body).encode(), MANIFEST)
        with pytest.raises(InvalidArgumentError, match="not a JSON object"):
            await image_config(client, manifest)


def _json(desc: Descriptor) -> dict[str, object]:
    return {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
