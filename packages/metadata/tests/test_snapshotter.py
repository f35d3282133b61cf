"""The namespaced snapshotter: the conformance suite over a real backend, namespaces, leases."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core import namespaces
from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.core.snapshots import BlockingSteps, Info, Kind, Usage
from pycontainerd.metadata.snapshotter import NamespacedSnapshotter
from pycontainerd.snapshots.native import NativeSnapshotter
from pycontainerd.snapshots.testing import SnapshotterSuite

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path

    from pycontainerd.core.types import Mount
    from pycontainerd.metadata.db import MetadataDB


class InNamespace:
    """Runs every call of a namespaced snapshotter in namespace ``ns``."""

    def __init__(self, inner: NamespacedSnapshotter, ns: str) -> None:
        self.inner = inner
        self.ns = ns

    async def stat(self, key: str) -> Info:
        with namespaces.with_namespace(self.ns):
            return await self.inner.stat(key)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        with namespaces.with_namespace(self.ns):
            return await self.inner.update(info, *fieldpaths)

    async def usage(self, key: str) -> Usage:
        with namespaces.with_namespace(self.ns):
            return await self.inner.usage(key)

    async def mounts(self, key: str) -> list[Mount]:
        with namespaces.with_namespace(self.ns):
            return await self.inner.mounts(key)

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        with namespaces.with_namespace(self.ns):
            return await self.inner.prepare(key, parent, labels=labels)

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        with namespaces.with_namespace(self.ns):
            return await self.inner.view(key, parent, labels=labels)

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        with namespaces.with_namespace(self.ns):
            await self.inner.commit(name, key, labels=labels)

    async def remove(self, key: str) -> None:
        with namespaces.with_namespace(self.ns):
            await self.inner.remove(key)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        with namespaces.with_namespace(self.ns):
            infos = [i async for i in self.inner.walk(*filters)]
        for info in infos:
            yield info

    async def cleanup(self) -> None:
        await self.inner.cleanup()

    async def close(self) -> None:
        await self.inner.close()


@pytest.fixture
def backend(tmp_path: Path) -> NativeSnapshotter:
    return NativeSnapshotter(tmp_path / "native")


@pytest.fixture
def namespaced(db: MetadataDB, backend: NativeSnapshotter) -> NamespacedSnapshotter:
    return NamespacedSnapshotter(db, "native", backend)


class TestNamespacedSnapshotter(SnapshotterSuite):
    @pytest.fixture
    def snapshotter(self, namespaced: NamespacedSnapshotter) -> InNamespace:
        return InNamespace(namespaced, "suite")


async def test_namespaces_are_isolated_and_share_the_backend(
    namespaced: NamespacedSnapshotter, backend: NativeSnapshotter
) -> None:
    a, b = InNamespace(namespaced, "a"), InNamespace(namespaced, "b")
    await a.prepare("k")
    await b.prepare("k")
    await a.commit("base", "k")
    with pytest.raises(NotFoundError):
        await b.stat("base")
    assert (await b.stat("k")).kind is Kind.ACTIVE
    backend_keys = sorted([i.name async for i in backend.walk()])
    # a committed snapshot keeps its active snapshot's sequence number
    assert backend_keys == ["a/1/base", "b/2/k"]
    await a.remove("base")
    assert sorted([i.name async for i in backend.walk()]) == ["b/2/k"]


async def test_commit_keeps_the_active_sequence_and_its_checks(
    namespaced: NamespacedSnapshotter, backend: NativeSnapshotter
) -> None:
    from pycontainerd.core.errdefs import AlreadyExistsError, FailedPreconditionError

    a = InNamespace(namespaced, "a")
    await a.prepare("extract-1 sha256:ab/cd")  # keys may hold '/' and spaces
    await a.prepare("other")
    await a.commit("sha256:ab/cd", "extract-1 sha256:ab/cd")
    assert sorted([i.name async for i in backend.walk()]) == ["a/1/sha256:ab/cd", "a/2/other"]
    with pytest.raises(AlreadyExistsError, match='snapshot "sha256:ab/cd"'):
        await a.commit("sha256:ab/cd", "other")
    with pytest.raises(FailedPreconditionError, match='snapshot "sha256:ab/cd" is not active'):
        await a.commit("again", "sha256:ab/cd")
    with pytest.raises(NotFoundError, match="snapshot gone does not exist"):
        await a.commit("again", "gone")
    # the refused commits changed nothing, here or in the backend
    assert (await a.stat("other")).kind is Kind.ACTIVE
    assert sorted([i.name async for i in backend.walk()]) == ["a/1/sha256:ab/cd", "a/2/other"]
    await a.commit("layer2", "other")
    assert sorted([i.name async for i in backend.walk()]) == ["a/1/sha256:ab/cd", "a/2/layer2"]


async def test_namespace_is_required(namespaced: NamespacedSnapshotter) -> None:
    from pycontainerd.core.errdefs import FailedPreconditionError

    with pytest.raises(FailedPreconditionError, match="namespace is required"):
        await namespaced.prepare("x")


async def test_snapshots_join_the_current_lease(
    db: MetadataDB, namespaced: NamespacedSnapshotter
) -> None:
    from pycontainerd.metadata.leases import LeaseStore

    with namespaces.with_namespace("ns"):
        lease = await LeaseStore(db).create("pull")
        with namespaces.with_lease(lease.id):
            await namespaced.prepare("extract")
            await namespaced.commit("layer", "extract")
    rows = db.view(
        lambda tx: tx.execute(
            "SELECT type, id FROM lease_resources WHERE lease_id = ?", (lease.id,)
        ).fetchall()
    )
    assert rows == [("snapshots/native", "layer")]


async def test_backend_failure_leaves_no_record(
    namespaced: NamespacedSnapshotter, backend: NativeSnapshotter
) -> None:
    ns = InNamespace(namespaced, "ns")
    await ns.prepare("base")
    await ns.commit("c", "base")
    await backend.close()  # every backend call now fails
    from pycontainerd.core.errdefs import FailedPreconditionError

    with pytest.raises(FailedPreconditionError):
        await ns.prepare("child", "c")
    with pytest.raises(NotFoundError):
        await ns.stat("child")


async def test_prepare_and_commit_run_on_the_writer_thread_in_one_trip(
    namespaced: NamespacedSnapshotter, backend: NativeSnapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a backend with blocking steps: its part runs beside the row, on the metadata writer
    threads: list[tuple[str, str]] = []
    for step in ("_new", "_commit"):
        original = getattr(backend, step)

        def record(*args: object, _step: str = step, _original: object = original) -> object:
            threads.append((_step, threading.current_thread().name))
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(backend, step, record)
    ns = InNamespace(namespaced, "ns")
    await ns.prepare("base")
    await ns.commit("c", "base")
    assert [s for s, _ in threads] == ["_new", "_commit"]
    assert all(name.startswith("metadata-write") for _, name in threads), threads
    assert (await ns.stat("c")).kind is Kind.COMMITTED


class AsyncOnly:
    """A backend with only the asynchronous snapshotter methods (a proxy, a plugin's)."""

    def __init__(self, inner: NativeSnapshotter) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        if name.endswith("_blocking"):
            raise AttributeError(name)
        return getattr(self._inner, name)


async def test_a_backend_without_blocking_steps_is_awaited(
    db: MetadataDB, backend: NativeSnapshotter
) -> None:
    plain = AsyncOnly(backend)
    assert not isinstance(plain, BlockingSteps)
    sn = NamespacedSnapshotter(db, "native", plain)  # type: ignore[arg-type]
    ns = InNamespace(sn, "ns")
    await ns.prepare("base")
    await ns.commit("c", "base")
    mounts = await ns.prepare("child", "c")
    assert mounts
    assert (await ns.stat("c")).kind is Kind.COMMITTED
    assert (await ns.stat("child")).parent == "c"
