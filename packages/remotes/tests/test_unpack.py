"""Unpacking into the daemon's own stores: labels, their order, and failures."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.content.testing import write_blob
from pycontainerd.core import content, namespaces
from pycontainerd.core.errdefs import FailedPreconditionError, UnavailableError
from pycontainerd.core.types import Descriptor
from pycontainerd.metadata.content import MetadataContentStore
from pycontainerd.metadata.metadata import Metadata
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.testing import build_image
from pycontainerd.remotes.unpack import chain_ids, unpack_layers
from pycontainerd.snapshots.differ import WalkingDiffer
from pycontainerd.snapshots.native import NativeSnapshotter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


IMAGE = build_image([{f"l{i}/f": f"layer {i}\n".encode()} for i in range(4)])
LAYERS = [
    Descriptor(media_type=b.media_type, digest=b.digest, size=len(b.data)) for b in IMAGE.blobs[:-1]
]
CONFIG = Descriptor(
    media_type=IMAGE.blobs[-1].media_type,
    digest=IMAGE.blobs[-1].digest,
    size=len(IMAGE.blobs[-1].data),
)
GC_LABEL = mt.GC_SNAPSHOT_PREFIX + "native"


class RecordingStore(MetadataContentStore):
    """The daemon's namespaced content store; records label updates, and fails one if told."""

    def __init__(self, md: Metadata, *, fail_for: str = "") -> None:
        super().__init__(md.db, md.content_backend)
        self.fail_for = fail_for
        self.updates: list[str] = []

    async def update(self, info: content.Info, *fieldpaths: str) -> content.Info:
        self.updates.append(info.digest)
        await asyncio.sleep(0)  # let the unpack run on meanwhile, as a real write does
        if info.digest == self.fail_for:
            msg = "label write lost"
            raise UnavailableError(msg)
        return await super().update(info, *fieldpaths)


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[MetadataContentStore, Metadata]]:
    backend = NativeSnapshotter(tmp_path / "native")
    md = Metadata(
        tmp_path / "meta" / "meta.db",
        LocalStore(tmp_path / "content"),
        snapshotters={"native": backend},
    )
    with namespaces.with_namespace("test"):
        store = md.content_store()
        for i, blob in enumerate(IMAGE.blobs):
            await write_blob(store, f"b{i}", blob.data, chunk=1 << 16)
        yield store, md
    await md.aclose()


async def _unpack(store: RecordingStore, md: Metadata, layers: list[Descriptor]) -> str:
    sn = md.snapshotter("native")
    differ = WalkingDiffer(md.content_store())
    return await unpack_layers(store, sn, differ, CONFIG, layers, snapshotter_name="native")


async def _labels(store: MetadataContentStore, dgst: str) -> dict[str, str]:
    return dict((await store.info(dgst)).labels)


async def test_every_label_is_written_before_unpack_returns_and_the_config_last(
    stores: tuple[MetadataContentStore, Metadata],
) -> None:
    inner, md = stores
    store = RecordingStore(md)
    top = await _unpack(store, md, LAYERS)
    assert top == chain_ids(IMAGE.diff_ids)[-1]
    for layer, diff_id in zip(LAYERS, IMAGE.diff_ids, strict=True):
        assert (await _labels(inner, layer.digest))[mt.UNCOMPRESSED_LABEL] == diff_id
    assert (await _labels(inner, CONFIG.digest))[GC_LABEL] == top
    assert store.updates == [*(x.digest for x in LAYERS), CONFIG.digest]
    # a second unpack finds every chain and labels again, in the same order
    store.updates.clear()
    await _unpack(store, md, LAYERS)
    assert store.updates == [*(x.digest for x in LAYERS), CONFIG.digest]


async def test_a_failed_label_write_fails_the_unpack(
    stores: tuple[MetadataContentStore, Metadata],
) -> None:
    inner, md = stores
    store = RecordingStore(md, fail_for=LAYERS[1].digest)
    unseen: list[dict[str, object]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: unseen.append(ctx))
    with pytest.raises(UnavailableError, match="label write lost"):
        await _unpack(store, md, LAYERS)
    assert GC_LABEL not in await _labels(inner, CONFIG.digest)
    assert CONFIG.digest not in store.updates
    assert mt.UNCOMPRESSED_LABEL in await _labels(inner, LAYERS[0].digest)
    assert unseen == []


async def test_a_later_layer_failing_still_labels_the_layers_committed_before(
    stores: tuple[MetadataContentStore, Metadata],
) -> None:
    inner, md = stores
    store = RecordingStore(md)
    wrong = [*LAYERS[:2], LAYERS[3], LAYERS[2]]  # layer 2 unpacks to another diff ID
    with pytest.raises(FailedPreconditionError, match="wrong diff id calculated on extraction"):
        await _unpack(store, md, wrong)
    for layer, diff_id in zip(LAYERS[:2], IMAGE.diff_ids, strict=False):
        assert (await _labels(inner, layer.digest))[mt.UNCOMPRESSED_LABEL] == diff_id
    assert mt.UNCOMPRESSED_LABEL not in await _labels(inner, LAYERS[3].digest)
    assert GC_LABEL not in await _labels(inner, CONFIG.digest)
