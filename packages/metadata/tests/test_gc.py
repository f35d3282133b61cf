"""Mark and sweep over a real database, a real local content store and the native snapshotter."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.errdefs import AlreadyExistsError, NotFoundError, UnavailableError
from pycontainerd.core.images import Image
from pycontainerd.core.leases import EXPIRE_LABEL, FLAT_LABEL, Resource
from pycontainerd.core.namespaces import with_lease, with_namespace
from pycontainerd.core.types import AnyValue, Descriptor
from pycontainerd.metadata import snapshots as snapkeys
from pycontainerd.metadata.containers import ContainerStore
from pycontainerd.metadata.content import MetadataContentStore
from pycontainerd.metadata.db import SharedExclusiveLock
from pycontainerd.metadata.gc import (
    ROOT_LABEL,
    Collector,
    Metrics,
    label_refs,
    next_expiry_ns,
    parse_expiry,
)
from pycontainerd.metadata.images import ImageStore
from pycontainerd.metadata.leases import LeaseStore
from pycontainerd.snapshots.native import NativeSnapshotter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from pycontainerd.core.snapshots import Info
    from pycontainerd.metadata.db import MetadataDB, Tx

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


pytestmark = pytest.mark.usefixtures("default_namespace")


def dgst(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def collector(db: MetadataDB, backend: LocalStore) -> Collector:
    return Collector(db, backend)


async def put(
    cs: MetadataContentStore, data: bytes, labels: Mapping[str, str] | None = None
) -> str:
    w = await cs.writer("ref-" + dgst(data)[7:19], total=len(data))
    await w.write(data)
    try:
        return await w.commit(len(data), "", labels=labels)
    except AlreadyExistsError:
        return dgst(data)


async def visible(cs: MetadataContentStore) -> set[str]:
    return {i.digest async for i in cs.walk()}


def on_disk(backend: LocalStore, d: str) -> bool:
    return backend.blob_path(d).exists()


async def test_unreferenced_blob_goes_root_stays(
    cs: MetadataContentStore, backend: LocalStore, collector: Collector
) -> None:
    plain = await put(cs, b"plain")
    root = await put(cs, b"rooted", {ROOT_LABEL: "2026-01-01T00:00:00Z"})
    stats = await collector.collect()
    assert await visible(cs) == {root}
    assert not on_disk(backend, plain)
    assert on_disk(backend, root)
    assert (stats.blobs, stats.backend_blobs) == (1, 1)
    # Removing the root label makes it collectable.
    info = await cs.info(root)
    await cs.update(type(info)(digest=root, labels={}), "labels")
    await collector.collect()
    assert await visible(cs) == set()
    assert not on_disk(backend, root)


async def test_lease_holds_content_until_deleted(
    cs: MetadataContentStore, backend: LocalStore, collector: Collector, db: MetadataDB
) -> None:
    leases = LeaseStore(db)
    await leases.create("l1")
    with with_lease("l1"):
        held = await put(cs, b"held")
    await collector.collect()
    assert await visible(cs) == {held}
    await leases.delete("l1")
    await collector.collect()
    assert await visible(cs) == set()
    assert not on_disk(backend, held)


async def write_image(
    cs: MetadataContentStore, layers: list[bytes], tag: bytes = b"cfg"
) -> tuple[str, list[str]]:
    """An index -> manifest -> config + layers graph labelled as a pull labels it."""
    layer_ds = [await put(cs, layer) for layer in layers]
    config = await put(cs, b'{"config":"' + tag + b'"}')
    manifest_body = json.dumps({"config": config, "layers": layer_ds}).encode()
    mlabels = {"containerd.io/gc.ref.content.config": config}
    mlabels |= {f"containerd.io/gc.ref.content.l.{i}": d for i, d in enumerate(layer_ds)}
    manifest = await put(cs, manifest_body, mlabels)
    index = await put(
        cs,
        json.dumps({"manifests": [manifest]}).encode(),
        {"containerd.io/gc.ref.content.m.0": manifest},
    )
    return index, [index, manifest, config, *layer_ds]


async def test_image_keeps_its_graph_and_shared_layers_survive(
    cs: MetadataContentStore, backend: LocalStore, collector: Collector, db: MetadataDB
) -> None:
    images = ImageStore(db)
    idx1, blobs1 = await write_image(cs, [b"shared-layer", b"layer-a"], b"one")
    idx2, blobs2 = await write_image(cs, [b"shared-layer", b"layer-b"], b"two")
    for name, idx in (("one", idx1), ("two", idx2)):
        await images.create(
            Image(name=name, target=Descriptor(media_type=INDEX, digest=idx, size=10))
        )
    await collector.collect()
    assert await visible(cs) == {*blobs1, *blobs2}
    await images.delete("one")
    await collector.collect()
    assert await visible(cs) == set(blobs2)
    assert all(on_disk(backend, d) for d in blobs2)
    assert not any(on_disk(backend, d) for d in set(blobs1) - set(blobs2))
    await images.delete("two")
    await collector.collect()
    assert await visible(cs) == set()


async def test_flat_lease_keeps_only_listed(
    cs: MetadataContentStore, collector: Collector, db: MetadataDB
) -> None:
    leases = LeaseStore(db)
    _, blobs = await write_image(cs, [b"l0"])
    index, manifest = blobs[0], blobs[1]
    await leases.create("flat", labels={FLAT_LABEL: "yes"})
    await leases.add_resource("flat", Resource(type="content", id=manifest))
    await leases.create("deep")
    await collector.collect()
    assert await visible(cs) == {manifest}
    # The same resource in a normal lease keeps what it references too.
    index2, blobs2 = await write_image(cs, [b"l1"], b"x")
    await leases.add_resource("deep", Resource(type="content", id=index2))
    await collector.collect()
    assert await visible(cs) == {manifest, *blobs2}
    assert index not in await visible(cs)


async def test_expired_lease_is_removed_with_what_it_held(
    cs: MetadataContentStore, collector: Collector, db: MetadataDB
) -> None:
    leases = LeaseStore(db)
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    future = datetime.now(UTC) + timedelta(hours=1)
    await leases.create("old", labels={EXPIRE_LABEL: past})
    await leases.create("new", labels={EXPIRE_LABEL: future.isoformat()})
    with with_lease("old"):
        gone = await put(cs, b"old")
    with with_lease("new"):
        kept = await put(cs, b"new")
    stats = await collector.collect()
    assert [le.id for le in await leases.list()] == ["new"]
    assert await visible(cs) == {kept}
    assert gone not in await visible(cs)
    assert stats.leases == 1
    assert stats.next_expiry_ns is not None
    assert abs(stats.next_expiry_ns / 1e9 - future.timestamp()) < 0.01


async def test_unparsable_expiry_keeps_the_lease(
    cs: MetadataContentStore, collector: Collector, db: MetadataDB
) -> None:
    leases = LeaseStore(db)
    await leases.create("odd", labels={EXPIRE_LABEL: "not a time"})
    with with_lease("odd"):
        kept = await put(cs, b"odd")
    await collector.collect()
    assert await visible(cs) == {kept}


async def test_ingests_expire_unless_leased(
    cs: MetadataContentStore, backend: LocalStore, collector: Collector, db: MetadataDB
) -> None:
    leases = LeaseStore(db)
    w = await cs.writer("fresh", total=10)
    await w.write(b"abc")
    await w.close()
    w = await cs.writer("stale", total=10)
    await w.write(b"abc")
    await w.close()
    await leases.create("l")
    with with_lease("l"):
        w = await cs.writer("leased", total=10)
        await w.write(b"abc")
        await w.close()
    db.update(lambda tx: tx.execute("UPDATE ingests SET expire_at = 1 WHERE ref = 'stale'"))
    stats = await collector.collect()
    assert [s.ref for s in await cs.list_statuses()] == ["fresh", "leased"]
    assert len(await backend.list_statuses()) == 2
    assert (stats.ingests, stats.backend_ingests) == (1, 1)
    await leases.delete("l")
    await collector.collect()
    assert [s.ref for s in await cs.list_statuses()] == ["fresh"]


async def test_ingest_keeps_its_expected_blob(
    cs: MetadataContentStore, collector: Collector
) -> None:
    # A second writer of the same bytes is still open while the first commits.
    w = await cs.writer("second", total=5, expected=dgst(b"later"))
    await w.close()
    blob = await put(cs, b"later")
    other = await put(cs, b"plain")
    await collector.collect()
    assert await visible(cs) == {blob}
    assert other not in await visible(cs)
    await cs.abort("second")
    await collector.collect()
    assert await visible(cs) == set()


async def test_backend_garbage_from_a_crash_goes_on_first_run(
    backend: LocalStore, db: MetadataDB
) -> None:
    # Bytes in the backend that no namespace lists (as a crash between the
    # sweep and the backend cleanup leaves them).
    with with_namespace("x"):
        raw = MetadataContentStore(db, backend)
        d = await put(raw, b"orphan")
        await put(raw, b"kept", {ROOT_LABEL: "1"})
    db.update(lambda tx: tx.execute("DELETE FROM blobs WHERE digest = ?", (d,)), notify=False)
    assert on_disk(backend, d)
    await Collector(db, backend).collect()
    assert not on_disk(backend, d)


async def test_container_snapshots_and_parents(
    tmp_path: Path, db: MetadataDB, backend: LocalStore
) -> None:
    sn = NativeSnapshotter(tmp_path / "native")
    collector = Collector(db, backend, {"native": sn})
    containers = ContainerStore(db)

    def add(tx: Tx, key: str, parent: str = "", kind: str = "active") -> str:
        return snapkeys.add(tx, "default", "native", key, parent=parent, kind=kind).backend_key

    base = db.update(lambda tx: add(tx, "base", kind="committed"))
    await sn.prepare("tmp", "")
    await sn.commit(base, "tmp")
    child = db.update(lambda tx: add(tx, "rootfs", parent="base"))
    await sn.prepare(child, base)
    stray = db.update(lambda tx: add(tx, "stray"))
    await sn.prepare(stray, "")
    await containers.create(
        Container(
            id="c1",
            runtime=RuntimeInfo(name="io.containerd.runc.v2"),
            spec=AnyValue(type_url="types.containerd.io/opencontainers/runtime-spec/1/Spec"),
            snapshotter="native",
            snapshot_key="rootfs",
        )
    )
    stats = await collector.collect()
    assert (stats.snapshots, stats.backend_snapshots) == (1, 1)
    assert {i.name async for i in sn.walk()} == {base, child}
    await containers.delete("c1")
    stats = await collector.collect()
    assert (stats.snapshots, stats.backend_snapshots) == (2, 2)
    assert {i.name async for i in sn.walk()} == set()
    await sn.close()


async def test_snapshot_label_refs_keep_content(
    tmp_path: Path, db: MetadataDB, backend: LocalStore, cs: MetadataContentStore
) -> None:
    sn = NativeSnapshotter(tmp_path / "native")
    collector = Collector(db, backend, {"native": sn})
    blob = await put(cs, b"from-snapshot")
    db.update(
        lambda tx: snapkeys.add(
            tx,
            "default",
            "native",
            "k",
            labels={ROOT_LABEL: "1", "containerd.io/gc.ref.content.x": blob},
        )
    )
    await collector.collect()
    assert await visible(cs) == {blob}
    await sn.close()


def test_label_refs_grammar() -> None:
    labels = {
        "containerd.io/gc.ref.content": "a",
        "containerd.io/gc.ref.content.l.0": "b",
        "containerd.io/gc.ref.content/x": "c",
        "containerd.io/gc.ref.contentx": "no",
        "containerd.io/gc.ref.snapshot.overlayfs": "s1",
        "containerd.io/gc.ref.snapshot.native/1": "s2",
        "containerd.io/gc.ref.snapshot./x": "no",
        "containerd.io/gc.ref.content.empty": "",
        "other": "no",
    }
    assert sorted(label_refs("ns", labels)) == [
        ("content", "ns", "a"),
        ("content", "ns", "b"),
        ("content", "ns", "c"),
        ("snapshots/native", "ns", "s2"),
        ("snapshots/overlayfs", "ns", "s1"),
    ]


def test_parse_expiry() -> None:
    assert parse_expiry("1970-01-01T00:00:01Z") == 1_000_000_000
    assert parse_expiry("1970-01-01T01:00:01+01:00") == 1_000_000_000
    assert parse_expiry("garbage") is None


async def test_next_expiry_sees_leases_and_ingests(
    db: MetadataDB, cs: MetadataContentStore
) -> None:
    assert db.view(next_expiry_ns) is None
    soon = datetime.now(UTC) + timedelta(minutes=5)
    await LeaseStore(db).create("x", labels={EXPIRE_LABEL: soon.isoformat()})
    w = await cs.writer("ingest")  # expires in 24 h: later than the lease
    await w.close()
    found = db.view(next_expiry_ns)
    assert found is not None
    assert abs(found / 1e9 - soon.timestamp()) < 0.01


async def test_metrics_count_collections(collector: Collector, cs: MetadataContentStore) -> None:
    await put(cs, b"x")
    await collector.collect()
    await collector.collect()
    lines = collector.metrics.render()
    assert "pycontainerd_gc_collections_total 2" in lines
    assert 'pycontainerd_gc_removed_total{kind="blobs"} 1' in lines
    assert isinstance(collector.metrics, Metrics)


async def test_failed_collection_is_counted_and_leaves_db(
    db: MetadataDB, backend: LocalStore, cs: MetadataContentStore
) -> None:
    class Broken(LocalStore):
        async def delete(self, dgst: str) -> None:
            raise OSError("disk on fire")

    d = await put(cs, b"x")
    collector = Collector(db, Broken(backend.root))
    with pytest.raises(OSError, match="disk on fire"):
        await collector.collect()
    assert collector.metrics.failures == 1
    assert on_disk(backend, d)  # row gone, bytes left: garbage, not a dangling row
    await Collector(db, backend).collect()
    assert not on_disk(backend, d)
    with pytest.raises(NotFoundError):
        await cs.info(d)


async def test_exclusive_lock_waits_for_shared_holders() -> None:
    lock = SharedExclusiveLock()
    order: list[str] = []
    release = asyncio.Event()

    async def reader() -> None:
        async with lock.shared():
            order.append("shared-in")
            await release.wait()
            order.append("shared-out")

    async def writer() -> None:
        async with lock.exclusive():
            order.append("exclusive")

    r = asyncio.create_task(reader())
    await asyncio.sleep(0)
    w = asyncio.create_task(writer())
    await asyncio.sleep(0.01)
    assert order == ["shared-in"]
    release.set()
    await asyncio.gather(r, w)
    assert order == ["shared-in", "shared-out", "exclusive"]


async def test_collection_logs_duration_and_counts_at_debug(
    collector: Collector, cs: MetadataContentStore, caplog: pytest.LogCaptureFixture
) -> None:
    d = await put(cs, b"logged")
    with caplog.at_level(logging.DEBUG, logger="pycontainerd.metadata.gc"):
        await collector.collect()
    done = [r for r in caplog.records if r.getMessage() == "garbage collected"]
    assert len(done) == 1
    assert done[0].levelno == logging.DEBUG
    fields = done[0].fields  # type: ignore[attr-defined]
    assert fields["blobs"] == 1
    assert fields["backend_blobs"] == 1
    assert str(fields["d"]).endswith("ms")
    removed = [r for r in caplog.records if r.getMessage() == "removed content"]
    assert [r.fields["digest"] for r in removed] == [d]  # type: ignore[attr-defined]


class _PausingCommit(NativeSnapshotter):
    """Native snapshots whose commit waits, after the backend rename, for ``release``.

    The metadata snapshotter commits through the blocking step (on its writer
    thread, the row right after): that is where it waits.
    """

    committed: threading.Event
    release: threading.Event

    def commit_blocking(
        self, name: str, key: str, *, labels: Mapping[str, str] | None = None
    ) -> None:
        super().commit_blocking(name, key, labels=labels)
        self.committed.set()
        self.release.wait(60)


async def test_collection_during_a_commit_keeps_the_new_layer(
    tmp_path: Path, db: MetadataDB, backend: LocalStore
) -> None:
    # Between the backend commit and the row that names it, a collection must
    # not see the new backend snapshot as garbage.
    from pycontainerd.metadata.snapshotter import NamespacedSnapshotter

    sn = _PausingCommit(tmp_path / "native")
    sn.committed, sn.release = threading.Event(), threading.Event()
    meta = NamespacedSnapshotter(db, "native", sn)
    collector = Collector(db, backend, {"native": sn})
    lease = (await LeaseStore(db).create("pull")).id
    with with_lease(lease):
        await meta.prepare("extract", "")
        commit = asyncio.create_task(meta.commit("layer", "extract"))
        assert await asyncio.to_thread(sn.committed.wait, 30)
        collect = asyncio.create_task(collector.collect())
        done, _ = await asyncio.wait({collect}, timeout=0.2)
        assert not done, "the collection ran in the middle of a commit"
        sn.release.set()
        await commit
        await collect
    assert [i.name async for i in meta.walk()] == ["layer"]
    assert len([i async for i in sn.walk()]) == 1
    await sn.close()


class _PausingWalk(NativeSnapshotter):
    """Native snapshots whose walk waits for ``release`` before it lists anything."""

    walking: asyncio.Event
    release: asyncio.Event

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        self.walking.set()
        await self.release.wait()
        async for info in super().walk(*filters):
            yield info


async def test_prepare_during_a_collection_keeps_the_new_snapshot(
    tmp_path: Path, db: MetadataDB, backend: LocalStore
) -> None:
    # The collection reads the rows it keeps, then walks the backend: a prepare
    # in between (its row after the read, its snapshot before the walk) must
    # not leave a snapshot the walk sees as garbage.
    from pycontainerd.metadata.snapshotter import NamespacedSnapshotter

    sn = _PausingWalk(tmp_path / "native")
    sn.walking, sn.release = asyncio.Event(), asyncio.Event()
    meta = NamespacedSnapshotter(db, "native", sn)
    collector = Collector(db, backend, {"native": sn})
    lease = (await LeaseStore(db).create("pull")).id
    with with_lease(lease):
        collect = asyncio.create_task(collector.collect())
        await asyncio.wait_for(sn.walking.wait(), 10)
        prepare = asyncio.create_task(meta.prepare("extract", ""))
        done, _ = await asyncio.wait({prepare}, timeout=0.2)
        assert not done, "the prepare ran in the middle of a collection"
        sn.release.set()
        await collect
        await prepare
        assert [i.name async for i in meta.walk()] == ["extract"]
    assert len([i async for i in sn.walk()]) == 1
    await sn.close()


async def test_a_commit_cut_by_a_crash_leaves_nothing_dangling(
    tmp_path: Path, db: MetadataDB, backend: LocalStore
) -> None:
    # kill -9 between the backend commit and its row: the row names an active
    # snapshot the backend renamed, and the backend holds a nameless layer.
    from pycontainerd.metadata.snapshotter import NamespacedSnapshotter

    sn = NativeSnapshotter(tmp_path / "native")
    meta = NamespacedSnapshotter(db, "native", sn)
    lease = (await LeaseStore(db).create("pull")).id
    with with_lease(lease):
        await meta.prepare("base-extract", "")
        await meta.commit("base", "base-extract")
        await meta.prepare("extract", "base")
    active = db.view(
        lambda tx: tx.execute("SELECT backend_key FROM snapshots WHERE key = 'extract'").fetchone()
    )[0]
    base_key = db.view(
        lambda tx: tx.execute("SELECT backend_key FROM snapshots WHERE key = 'base'").fetchone()
    )[0]
    await sn.commit("default/99/layer", active)  # the backend step; the row never came
    # A crash between recording an ingest and opening it in the backend.
    with with_lease(lease):
        await (await MetadataContentStore(db, backend).writer("cut")).close()
    bref = db.view(lambda tx: tx.execute("SELECT backend_ref FROM ingests").fetchone())[0]
    await backend.abort(bref)

    stats = await Collector(db, backend, {"native": sn}).collect()  # the first after a start
    assert stats.backend_snapshots == 1
    assert [i.name async for i in meta.walk()] == ["base"]  # the leased base stays
    assert {i.name async for i in sn.walk()} == {base_key}
    leased = await LeaseStore(db).list_resources(lease)
    assert [(r.type, r.id) for r in leased] == [("snapshots/native", "base")]
    assert db.view(lambda tx: tx.execute("SELECT COUNT(*) FROM ingests").fetchone())[0] == 0
    # The key is free again: the client's retry prepares and commits it.
    with with_lease(lease):
        await meta.prepare("extract", "base")
        await meta.commit("layer", "extract")
    assert sorted([i.name async for i in meta.walk()]) == ["base", "layer"]
    await sn.close()


class _Unreachable(NativeSnapshotter):
    """A snapshotter that lists nothing and cannot answer a stat (a proxy that went away)."""

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        for _ in ():
            yield _

    async def stat(self, key: str) -> Info:
        msg = "connection refused"
        raise UnavailableError(msg)


async def test_rows_stay_when_the_backend_cannot_say(
    tmp_path: Path, db: MetadataDB, backend: LocalStore
) -> None:
    from pycontainerd.metadata.snapshotter import NamespacedSnapshotter

    sn = _Unreachable(tmp_path / "native")
    meta = NamespacedSnapshotter(db, "native", sn)
    lease = (await LeaseStore(db).create("hold")).id
    with with_lease(lease):
        await meta.prepare("kept", "")
    await Collector(db, backend, {"native": sn}).collect()
    assert [i.name async for i in meta.walk()] == ["kept"]
    await sn.close()
