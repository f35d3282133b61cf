"""The garbage collection scheduler (plugin ``io.containerd.gc.v1.scheduler``).

Decides when the :class:`~pycontainerd.metadata.gc.Collector` runs, with
containerd's configuration keys and defaults:

=====================  ===========  ===========================================
key                    default      meaning
=====================  ===========  ===========================================
``pause_threshold``    ``0.02``     largest share of wall time spent collecting
                                    (clamped to [0, 0.5])
``deletion_threshold`` ``0``        deletions that force a collection at once
                                    (0: a deletion makes the next tick collect)
``mutation_threshold`` ``100``      writes after which a tick collects
``schedule_delay``     ``"0s"``     delay before a forced collection
``startup_delay``      ``"100ms"``  the first collection after start
=====================  ===========  ===========================================

How it runs: every committed write of the database reports itself (a
*mutation*, a *deletion* when it dropped a reference). A timer ticks every
``interval``; a tick collects when something was deleted, enough was written,
or a collection was requested, and otherwise re-arms. After each collection
the next tick is ``interval = cost / pause_threshold`` after it ended, where
``cost`` is the larger of the last collection's wall time and a moving average
that weighs recent runs most (at least 5 ms). Each collection and the pause
after it then spend ``pause_threshold / (1 + pause_threshold)`` of their wall
time collecting (1.96 % for the default), under the threshold with a margin for
a collection that costs a little more than the one before; cheap collections
at start-up cannot shorten the pauses after the expensive ones that follow (a
mean over every run since start did).
:meth:`Scheduler.schedule_and_wait` (synchronous image and lease deletes)
forces a collection after ``schedule_delay`` and returns when a collection
that *started after the call* has finished.

Better than upstream (containerd issue 6294): the scheduler also wakes at the
earliest expiry of a lease (``containerd.io/gc.expire``) or unleased ingest it
knows of and collects then, so an idle daemon frees expired leases. It learns
expiries from each collection and, shortly after a burst of writes, from one
cheap query.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError, UnknownError
from pycontainerd.metadata.db import now_ns
from pycontainerd.metadata.gc import next_expiry_ns

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycontainerd.metadata.gc import Collector, Stats

log = logging.getLogger(__name__)

#: Interval before any collection has been timed, as upstream.
INITIAL_INTERVAL: Final = 1.0
#: Floor of the collection cost used to compute the interval.
MIN_AVERAGE: Final = 0.005
#: Weight of the newest collection in the moving average of collection times.
RECENT_WEIGHT: Final = 0.5
#: Extra wait after a failed collection.
FAILURE_BACKOFF: Final = 1.0
#: After a write, how soon expiries are looked up again (one cheap query per burst).
RESCAN_DELAY: Final = 0.05

DEFAULTS: Final[Mapping[str, object]] = {
    "pause_threshold": 0.02,
    "deletion_threshold": 0,
    "mutation_threshold": 100,
    "schedule_delay": "0s",
    "startup_delay": "100ms",
}


def _duration(key: str, value: object) -> float:
    from pycontainerd.config.duration import parse_duration
    from pycontainerd.config.errors import ConfigError

    if not isinstance(value, str):
        msg = f'gc scheduler: {key} must be a duration string like "100ms", got {value!r}'
        raise InvalidArgumentError(msg)
    try:
        seconds = parse_duration(value)
    except ConfigError as exc:
        msg = f"gc scheduler: {key}: {exc.message}"
        raise InvalidArgumentError(msg) from None
    if seconds < 0:
        msg = f"gc scheduler: {key} must not be negative, got {value!r}"
        raise InvalidArgumentError(msg)
    return seconds


def _number(key: str, value: object, *, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        msg = f"gc scheduler: {key} must be a number, got {value!r}"
        raise InvalidArgumentError(msg)
    if integer and not float(value).is_integer():
        msg = f"gc scheduler: {key} must be a whole number, got {value!r}"
        raise InvalidArgumentError(msg)
    if not math.isfinite(value):
        msg = f"gc scheduler: {key} must be finite, got {value!r}"
        raise InvalidArgumentError(msg)
    return float(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerConfig:
    """Decoded ``[plugins."io.containerd.gc.v1.scheduler"]``; see the module table."""

    pause_threshold: float = 0.02
    deletion_threshold: int = 0
    mutation_threshold: int = 100
    schedule_delay: float = 0.0
    startup_delay: float = 0.1

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> SchedulerConfig:
        """Decode and clamp like upstream (unknown keys are ignored).

        Raises:
            InvalidArgumentError: a value of the wrong type or an invalid duration.
        """
        merged = {**DEFAULTS, **raw}
        pause = _number("pause_threshold", merged["pause_threshold"], integer=False)
        deletion = _number("deletion_threshold", merged["deletion_threshold"], integer=True)
        mutation = _number("mutation_threshold", merged["mutation_threshold"], integer=True)
        return cls(
            pause_threshold=min(max(pause, 0.0), 0.5),
            deletion_threshold=max(int(deletion), 0),
            mutation_threshold=max(int(mutation), 0),
            schedule_delay=_duration("schedule_delay", merged["schedule_delay"]),
            startup_delay=_duration("startup_delay", merged["startup_delay"]),
        )

    def exports(self) -> dict[str, str]:
        """Introspection exports with upstream's names and formatting."""
        from pycontainerd.config.duration import format_duration

        return {
            "PauseThreshold": f"{self.pause_threshold:g}",
            "DeletionThreshold": str(self.deletion_threshold),
            "MutationThreshold": str(self.mutation_threshold),
            "ScheduleDelay": format_duration(self.schedule_delay),
        }


class Scheduler:
    """Runs a collector in the background of the event loop that calls :meth:`start`.

    Args:
        collector: what to run.
        config: when to run it.
    """

    def __init__(self, collector: Collector, config: SchedulerConfig | None = None) -> None:
        self.collector = collector
        self.config = config or SchedulerConfig()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._next_run: float | None = None  # monotonic time of the next tick
        self._expiry_at: float | None = None  # monotonic time of the earliest expiry
        self._rescan_at: float | None = None  # when to look expiries up again
        self._triggered = False
        self._deletions = 0
        self._mutations = 0
        self._last_start = -math.inf
        self._waiters: list[asyncio.Future[Stats]] = []
        self._collections = 0
        self._recent_seconds = 0.0  # moving average of collection wall times
        self.interval = INITIAL_INTERVAL
        self.last_stats: Stats | None = None

    # -- life cycle ------------------------------------------------------

    def start(self) -> None:
        """Start the background task and listen to the database's writes."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self.collector.db.add_mutation_callback(self._on_mutation)
        self.collector.db.set_gc_waiter(self.wait)
        if self.config.startup_delay > 0:
            self._next_run = time.monotonic() + self.config.startup_delay
        self._task = self._loop.create_task(self._run(), name="gc-scheduler")

    async def aclose(self) -> None:
        """Stop the task; pending waiters fail."""
        task, self._task = self._task, None
        self.collector.db.set_gc_waiter(None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(UnknownError("gc scheduler stopped"))
        self._waiters = []

    # -- triggers --------------------------------------------------------

    def _on_mutation(self, dirty: bool) -> None:
        """Database callback; runs on whichever thread committed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        stamp = time.monotonic()
        with contextlib.suppress(RuntimeError):  # loop closing
            loop.call_soon_threadsafe(self._mutation, dirty, stamp)

    def _mutation(self, dirty: bool, stamp: float) -> None:
        if stamp < self._last_start:
            return  # the running (or last) collection saw it
        if dirty:
            self._deletions += 1
        self._mutations += 1
        if self._rescan_at is None:
            self._rescan_at = stamp + RESCAN_DELAY
            self._wake.set()
        cfg = self.config
        force = cfg.deletion_threshold > 0 and self._deletions >= cfg.deletion_threshold
        idle_trigger = self._next_run is None and (
            (cfg.deletion_threshold == 0 and self._deletions > 0)
            or (cfg.mutation_threshold > 0 and self._mutations >= cfg.mutation_threshold)
        )
        if force or idle_trigger:
            self._schedule(cfg.schedule_delay)

    def _schedule(self, delay: float) -> None:
        at = time.monotonic() + delay
        if self._next_run is None or self._next_run > at:
            self._next_run = at
            self._wake.set()

    def trigger(self) -> None:
        """Request a collection after ``schedule_delay`` without waiting for it."""
        self._triggered = True
        self._schedule(self.config.schedule_delay)

    async def schedule_and_wait(self) -> Stats:
        """Collect soon and wait for a collection that starts after this call.

        Raises:
            ContainerdError: that collection failed (``gc failed: ...``).
        """
        if self._task is None:
            msg = "gc scheduler is not running"
            raise UnknownError(msg)
        fut: asyncio.Future[Stats] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self.trigger()
        return await fut

    async def wait(self) -> None:
        """:meth:`schedule_and_wait` without the result (``MetadataDB.set_gc_waiter``)."""
        await self.schedule_and_wait()

    # -- the loop --------------------------------------------------------

    def _due(self, now: float) -> bool:
        if self._expiry_at is not None and now >= self._expiry_at:
            return True
        return self._next_run is not None and now >= self._next_run

    async def _run(self) -> None:
        while True:
            now = time.monotonic()
            if self._rescan_at is not None and now >= self._rescan_at:
                await self._rescan_expiry()
                continue
            if not self._due(now):
                wake_at = min(
                    t
                    for t in (self._next_run, self._expiry_at, self._rescan_at, math.inf)
                    if t is not None
                )
                self._wake.clear()
                timeout = None if wake_at == math.inf else max(wake_at - now, 0.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            expired = self._expiry_at is not None and now >= self._expiry_at
            cfg = self.config
            needed = (
                self._triggered
                or expired
                or self._collections == 0
                or self._deletions > 0
                or (cfg.mutation_threshold > 0 and self._mutations >= cfg.mutation_threshold)
            )
            if not needed:
                self._next_run = now + self.interval
                continue
            await self._collect_once()

    async def _rescan_expiry(self) -> None:
        self._rescan_at = None
        try:
            at = await self.collector.db.aview(next_expiry_ns)
        except Exception:
            log.exception("gc scheduler: looking up expiries failed")
            return
        self._set_expiry(at)

    def _set_expiry(self, at_ns: int | None) -> None:
        if at_ns is None:
            self._expiry_at = None
            return
        # A little after the instant, so the collection sees it as past.
        self._expiry_at = time.monotonic() + max(at_ns - now_ns(), 0) / 1e9 + 0.01

    async def _collect_once(self) -> None:
        waiters, self._waiters = self._waiters, []
        self._last_start = time.monotonic()
        self._triggered = False
        self._deletions = 0
        self._mutations = 0
        self._rescan_at = None  # the collection reports the next expiry itself
        try:
            stats = await self.collector.collect()
        except Exception as exc:
            log.exception("garbage collection failed")
            self._next_run = time.monotonic() + self.interval + FAILURE_BACKOFF
            self._expiry_at = None  # no tight retry loop; looked up again below
            self._rescan_at = time.monotonic() + self.interval + FAILURE_BACKOFF
            err = UnknownError(f"gc failed: {exc}")
            for fut in waiters:
                if not fut.done():
                    fut.set_exception(err)
            return
        self._note_duration(stats.seconds)
        self.last_stats = stats
        self._set_expiry(stats.next_expiry_ns)
        # A request that arrived while this collection ran needs one more.
        delay = self.config.schedule_delay if self._triggered else self.interval
        self._next_run = time.monotonic() + delay
        for fut in waiters:
            if not fut.done():
                fut.set_result(stats)

    def _note_duration(self, took: float) -> None:
        """Fold one collection's wall time into the interval (see the module docstring)."""
        if self._collections == 0:
            self._recent_seconds = took
        else:
            self._recent_seconds += RECENT_WEIGHT * (took - self._recent_seconds)
        self._collections += 1
        if self.config.pause_threshold > 0:
            cost = max(self._recent_seconds, took, MIN_AVERAGE)
            self.interval = cost / self.config.pause_threshold

    # -- metrics ---------------------------------------------------------

    def metrics_lines(self) -> list[str]:
        """Prometheus exposition lines for ``/v1/metrics`` (``pycontainerd_gc_*``)."""
        lines = self.collector.metrics.render()
        lines += [
            "# HELP pycontainerd_gc_interval_seconds Current interval between collections.",
            "# TYPE pycontainerd_gc_interval_seconds gauge",
            f"pycontainerd_gc_interval_seconds {self.interval!r}",
        ]
        return lines
