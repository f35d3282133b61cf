"""The GC scheduler: configuration, triggers, synchronous waits, expiry wake-ups, the plugin."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError, UnknownError
from pycontainerd.core.images import Image
from pycontainerd.core.leases import EXPIRE_LABEL
from pycontainerd.core.namespaces import with_lease
from pycontainerd.core.plugin import Closable, InitContext, PluginType
from pycontainerd.core.types import Descriptor
from pycontainerd.metadata import plugin
from pycontainerd.metadata.gc import Collector, Stats
from pycontainerd.metadata.images import ImageStore
from pycontainerd.metadata.leases import LeaseStore
from pycontainerd.metadata.metadata import Metadata
from pycontainerd.metadata.scheduler import Scheduler, SchedulerConfig

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

    from pycontainerd.metadata.content import MetadataContentStore
    from pycontainerd.metadata.db import MetadataDB


pytestmark = pytest.mark.usefixtures("default_namespace")

FAST = SchedulerConfig(startup_delay=0.01)


@pytest.fixture
async def scheduler(db: MetadataDB, backend: LocalStore) -> AsyncIterator[Scheduler]:
    s = Scheduler(Collector(db, backend), FAST)
    s.start()
    yield s
    await s.aclose()


async def put(cs: MetadataContentStore, data: bytes) -> str:
    w = await cs.writer("r-" + hashlib.sha256(data).hexdigest()[:12], total=len(data))
    await w.write(data)
    return await w.commit(len(data))


async def visible(cs: MetadataContentStore) -> set[str]:
    return {i.digest async for i in cs.walk()}


async def eventually(pred: Callable[[], object], within: float = 5.0) -> float:
    """Await ``pred()`` (sync or async) becoming true; returns the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - start
        await asyncio.sleep(0.01)
    msg = f"condition not met within {within}s"
    raise AssertionError(msg)


def collections(s: Scheduler) -> int:
    return s.collector.metrics.collections


# -- configuration -----------------------------------------------------------


def test_defaults_and_exports() -> None:
    cfg = SchedulerConfig.from_mapping({})
    assert cfg == SchedulerConfig()
    assert (cfg.schedule_delay, cfg.startup_delay) == (0.0, 0.1)
    assert cfg.exports() == {
        "PauseThreshold": "0.02",
        "DeletionThreshold": "0",
        "MutationThreshold": "100",
        "ScheduleDelay": "0s",
    }


def test_values_are_clamped_like_upstream() -> None:
    cfg = SchedulerConfig.from_mapping(
        {"pause_threshold": 0.9, "mutation_threshold": -5, "deletion_threshold": -1}
    )
    assert (cfg.pause_threshold, cfg.mutation_threshold, cfg.deletion_threshold) == (0.5, 0, 0)
    assert SchedulerConfig.from_mapping({"pause_threshold": -1}).pause_threshold == 0.0
    cfg = SchedulerConfig.from_mapping({"schedule_delay": "1.5ms", "startup_delay": "2s"})
    assert (cfg.schedule_delay, cfg.startup_delay) == (0.0015, 2.0)
    assert cfg.exports()["ScheduleDelay"] == "1.5ms"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("pause_threshold", "lots", "pause_threshold must be a number"),
        ("pause_threshold", float("nan"), "pause_threshold must be finite"),
        ("mutation_threshold", 2.5, "mutation_threshold must be a whole number"),
        ("deletion_threshold", True, "deletion_threshold must be a number"),
        ("schedule_delay", 5, "schedule_delay must be a duration string"),
        ("schedule_delay", "5", 'schedule_delay: missing unit in duration "5"'),
        ("startup_delay", "-1s", "startup_delay must not be negative"),
    ],
)
def test_bad_config_is_invalid_argument(key: str, value: object, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        SchedulerConfig.from_mapping({key: value})


# -- triggers ----------------------------------------------------------------


async def test_first_collection_after_startup_delay(
    db: MetadataDB, backend: LocalStore, cs: MetadataContentStore
) -> None:
    await put(cs, b"garbage")
    s = Scheduler(Collector(db, backend), FAST)
    s.start()
    try:
        await eventually(lambda: collections(s) == 1)
        assert await visible(cs) == set()
    finally:
        await s.aclose()


async def test_deletion_is_collected_on_the_next_tick(
    scheduler: Scheduler, cs: MetadataContentStore, db: MetadataDB
) -> None:
    await eventually(lambda: collections(scheduler) == 1)
    images = ImageStore(db)
    blob = await put(cs, b"image target")
    await images.create(
        Image(name="i", target=Descriptor(media_type="application/x", digest=blob, size=12))
    )
    await asyncio.sleep(scheduler.interval + 0.1)
    ran = collections(scheduler)
    assert await visible(cs) == {blob}
    # The next tick is at most one interval away. Read it now: the collection
    # sets a new one from its own cost, which can be shorter (a slow first run).
    interval = scheduler.interval
    await images.delete("i")
    took = await eventually(lambda: collections(scheduler) > ran, within=interval + 10)
    stats = scheduler.last_stats
    assert stats is not None
    # When the collection started, not ended: its own length is the machine's.
    assert took - stats.seconds <= interval + 0.5
    assert await visible(cs) == set()


async def test_quiet_ticks_do_not_collect(scheduler: Scheduler, cs: MetadataContentStore) -> None:
    await eventually(lambda: collections(scheduler) == 1)
    await put(cs, b"a write, not a deletion")  # 1 mutation < threshold 100
    await asyncio.sleep(2 * scheduler.interval + 0.1)
    assert collections(scheduler) == 1


async def test_mutation_threshold_triggers(
    db: MetadataDB, backend: LocalStore, cs: MetadataContentStore
) -> None:
    s = Scheduler(Collector(db, backend), SchedulerConfig(startup_delay=0.01, mutation_threshold=3))
    s.start()
    try:
        await eventually(lambda: collections(s) == 1)
        for i in range(3):
            await LeaseStore(db).create(f"l{i}")
        await eventually(lambda: collections(s) == 2, within=s.interval + 1)
    finally:
        await s.aclose()


async def test_deletion_threshold_forces_immediate_collection(
    db: MetadataDB, backend: LocalStore, cs: MetadataContentStore
) -> None:
    cfg = SchedulerConfig(startup_delay=0.01, deletion_threshold=1, pause_threshold=0.001)
    s = Scheduler(Collector(db, backend), cfg)
    s.start()
    try:
        await eventually(lambda: collections(s) == 1)
        assert s.interval > 4  # the tick is far away
        d = await put(cs, b"x")
        await cs.delete(d)
        took = await eventually(lambda: collections(s) == 2)
        assert took < 1
    finally:
        await s.aclose()


async def test_interval_keeps_pause_threshold(scheduler: Scheduler) -> None:
    await eventually(lambda: collections(scheduler) == 1)
    stats = scheduler.last_stats
    assert stats is not None
    avg = max(stats.seconds, 0.005)
    assert scheduler.interval == pytest.approx(avg / 0.02)
    assert scheduler.interval >= 0.245 - 1e-9


class Costly(Collector):
    """A collector whose runs take at least ``cost`` seconds; records each run's span."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.cost = 0.0
        self.spans: list[tuple[float, float]] = []

    async def collect(self) -> Stats:
        started = time.monotonic()
        stats = await super().collect()
        await asyncio.sleep(max(self.cost - (time.monotonic() - started), 0.0))
        stats.seconds = time.monotonic() - started
        self.spans.append((started, started + stats.seconds))
        return stats


def busy_share(spans: list[tuple[float, float]], start: float, end: float) -> float:
    """Share of ``[start, end]`` covered by the collection spans."""
    busy = sum(max(0.0, min(b, end) - max(a, start)) for a, b in spans)
    return busy / (end - start)


async def test_share_stays_under_threshold_when_collections_get_costlier(
    db: MetadataDB, backend: LocalStore, cs: MetadataContentStore
) -> None:
    # Many cheap collections first (an empty store at start-up), then every
    # collection costs 40 ms while a delete arrives every 10 ms: the pauses
    # must follow the recent cost, not a mean dragged down by the cheap runs.
    pause = 0.25
    collector = Costly(db, backend)
    s = Scheduler(collector, SchedulerConfig(startup_delay=0.01, pause_threshold=pause))
    s.start()
    n = 0

    async def delete_one() -> None:
        nonlocal n
        n += 1
        blob = await put(cs, b"garbage %d" % n)
        with contextlib.suppress(NotFoundError):  # a collection may have been quicker
            await cs.delete(blob)
        await asyncio.sleep(0.01)

    try:
        while collections(s) < 15:
            await delete_one()
        collector.cost = 0.04
        start = time.monotonic()
        costly = len(collector.spans) + 10
        # Ten collections, not a fixed time: on a loaded machine a run costs
        # more than 40 ms and the pauses grow with it, so fewer fit in a window.
        while len(collector.spans) < costly:
            assert time.monotonic() - start < 60, "the stream of deletes stopped being collected"
            await delete_one()
        end = time.monotonic()
        share = busy_share(collector.spans, start, end)
        # Each collection plus the pause after it is at most ``pause`` busy; the
        # margin covers the window's edges (at most one collection).
        assert share <= pause * 1.3, f"collector busy {share:.0%} of the time"
        # ... and the pauses follow the cost, not longer: it kept collecting.
        assert share >= pause / 4, f"collector busy only {share:.0%} of the time"
    finally:
        await s.aclose()


# -- synchronous delete -------------------------------------------------------


async def test_sync_image_delete_returns_after_collection(
    scheduler: Scheduler, cs: MetadataContentStore, db: MetadataDB, backend: LocalStore
) -> None:
    await eventually(lambda: collections(scheduler) == 1)
    images = ImageStore(db)
    blobs = []
    for name in ("a", "b"):
        blob = await put(cs, name.encode() * 4)
        blobs.append(blob)
        await images.create(
            Image(name=name, target=Descriptor(media_type="application/x", digest=blob, size=4))
        )
    await images.delete("a", sync=True)
    assert await visible(cs) == {blobs[1]}
    assert not backend.blob_path(blobs[0]).exists()
    await images.delete("b", sync=True)
    assert not backend.blob_path(blobs[1]).exists()


async def test_sync_lease_delete_returns_after_collection(
    scheduler: Scheduler, cs: MetadataContentStore, db: MetadataDB
) -> None:
    leases = LeaseStore(db)
    await leases.create("l")
    with with_lease("l"):
        await put(cs, b"leased")
    await eventually(lambda: collections(scheduler) >= 1)
    assert len(await visible(cs)) == 1
    await leases.delete("l", sync=True)
    assert await visible(cs) == set()


class Gated(Collector):
    """A collector whose runs wait for a gate, to catch the scheduler mid-collection."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.gate = asyncio.Event()
        self.running = asyncio.Event()
        self.starts: list[float] = []

    async def collect(self) -> Stats:
        self.starts.append(time.monotonic())
        self.running.set()
        await self.gate.wait()
        self.running.clear()
        return await super().collect()


async def test_waiter_is_not_served_by_a_collection_already_running(
    db: MetadataDB, backend: LocalStore
) -> None:
    collector = Gated(db, backend)
    s = Scheduler(collector, FAST)
    s.start()
    try:
        await asyncio.wait_for(collector.running.wait(), 5)  # the startup collection
        asked = time.monotonic()
        waiter = asyncio.ensure_future(s.schedule_and_wait())
        await asyncio.sleep(0.05)
        collector.gate.set()
        stats = await asyncio.wait_for(waiter, 5)
        assert len(collector.starts) == 2
        assert collector.starts[1] > asked
        assert stats.started_at >= asked
    finally:
        await s.aclose()


async def test_failed_collection_fails_waiters(db: MetadataDB, backend: LocalStore) -> None:
    class Failing(Collector):
        async def collect(self) -> Stats:
            raise OSError("backend gone")

    s = Scheduler(Failing(db, backend), SchedulerConfig(startup_delay=0))
    s.start()
    try:
        with pytest.raises(UnknownError, match="gc failed: backend gone"):
            await asyncio.wait_for(s.schedule_and_wait(), 5)
    finally:
        await s.aclose()


async def test_wait_without_running_scheduler_fails(db: MetadataDB, backend: LocalStore) -> None:
    s = Scheduler(Collector(db, backend))
    with pytest.raises(UnknownError, match="not running"):
        await s.schedule_and_wait()


# -- expiry (better than upstream) -------------------------------------------


async def test_expired_lease_collected_on_idle_store(
    scheduler: Scheduler, cs: MetadataContentStore, db: MetadataDB
) -> None:
    await eventually(lambda: collections(scheduler) == 1)
    leases = LeaseStore(db)
    expire = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    await leases.create("short", labels={EXPIRE_LABEL: expire})
    with with_lease("short"):
        await put(cs, b"short lived")
    assert len(await visible(cs)) == 1
    # No more writes: only the expiry can wake the collector.
    await eventually(lambda: collections(scheduler) >= 2, within=5)
    await eventually(lambda: _empty(cs), within=5)
    assert await leases.list() == []


async def _empty(cs: MetadataContentStore) -> bool:
    return not await visible(cs)


# -- plugin --------------------------------------------------------------------


async def test_plugin_init_exports_and_close(tmp_path: Path) -> None:
    regs = {r.uri: r for r in plugin.pycontainerd_plugins()}
    reg = regs["io.containerd.gc.v1.scheduler"]
    assert reg.requires == (PluginType.METADATA,)
    assert dict(reg.config) == {
        "pause_threshold": 0.02,
        "deletion_threshold": 0,
        "mutation_threshold": 100,
        "schedule_delay": "0s",
        "startup_delay": "100ms",
    }
    md = Metadata(tmp_path / "meta.db", LocalStore(tmp_path / "content"))
    ic = InitContext(
        root=tmp_path,
        state=tmp_path,
        config=dict(reg.config),
        initialized={PluginType.METADATA: {"sqlite": md}},
    )
    s = await reg.init(ic)
    assert isinstance(s, Scheduler)
    try:
        assert isinstance(s, Closable)
        assert ic.exports == {
            "PauseThreshold": "0.02",
            "DeletionThreshold": "0",
            "MutationThreshold": "100",
            "ScheduleDelay": "0s",
        }
        await md.db.wait_for_gc()  # installed as the database's GC waiter
        assert collections(s) >= 1
        assert any(
            line.startswith("pycontainerd_gc_collections_total") for line in s.metrics_lines()
        )
    finally:
        await s.aclose()
        await md.aclose()


async def test_plugin_rejects_bad_config(tmp_path: Path) -> None:
    reg = {r.uri: r for r in plugin.pycontainerd_plugins()}["io.containerd.gc.v1.scheduler"]
    md = Metadata(tmp_path / "meta.db", LocalStore(tmp_path / "content"))
    ic = InitContext(
        root=tmp_path,
        state=tmp_path,
        config={**reg.config, "startup_delay": "soon"},
        initialized={PluginType.METADATA: {"sqlite": md}},
    )
    try:
        with pytest.raises(InvalidArgumentError, match="startup_delay"):
            await reg.init(ic)
    finally:
        await md.aclose()
