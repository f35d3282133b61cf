"""The daemon's spare pyrunc shim: one shim process started ahead, handed the next new shim's work.

:mod:`pycontainerd.runtime.shim.spare` explains the mechanism. :class:`Spares`
keeps at most one spare, and only once one is wanted: the first time the
daemon needs a new shim of its own (``containerd-shim-pyrunc-v2`` on the
daemon's interpreter) it starts one as usual, and a spare in the background
once that shim has created its task; from then on a new shim is the spare,
and the next spare starts once the task it serves is created (not earlier: its
imports would compete with that ``runc create`` for the CPU).
A daemon whose tasks all run on other shims (the Go runc shim, a shim on
another interpreter) never has a spare.

A spare that dies while waiting is noticed on the event loop (its socketpair
closes) and replaced; after three that died young in a row the daemon stops
making spares (each new shim then starts as before) and logs why. When the
daemon stops, its spare is killed (through a pidfd, never a reused pid); a
daemon that dies leaves a spare that exits on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from pycontainerd.runtime.shim import spare as spare_shim

if TYPE_CHECKING:
    from collections.abc import Callable

    from pycontainerd.runtime.shim.spare import Spare

__all__ = ["Spares"]

log = logging.getLogger("pycontainerd.runtime")

YOUNG = 10.0
"""A spare that dies within this many seconds of its start counts as a failure."""
MAX_FAILURES = 3


class Spares:
    """At most one spare shim, waiting (see the module's text).

    Args:
        address: the daemon's gRPC address (the spare's ``-address``).
        env: builds the spare's environment (the handoff replaces it).
    """

    def __init__(self, address: str, env: Callable[[], dict[str, str]]) -> None:
        self.address = address
        self._env = env
        self._spare: Spare | None = None
        self._started_at = 0.0
        self._starting: asyncio.Task[None] | None = None
        self._wanted = False
        self._failures = 0
        self._closed = False

    @property
    def waiting(self) -> Spare | None:
        """The spare waiting now, if any."""
        return self._spare

    def take(self) -> Spare | None:
        """The waiting spare, removed from the pool (None: there is none)."""
        s = self._spare
        if s is None:
            return None
        self._unwatch(s)
        if not s.alive():
            self._died(s)
            return None
        return s

    def give_back(self, s: Spare | None, *, wanted: bool) -> None:
        """Return what :meth:`take` gave (used or not).

        ``wanted``: a new shim was needed (from now on a spare is kept ready).
        The next spare is started by :meth:`refill`, which the task manager
        calls once the task is created: a spare importing meanwhile would slow
        the new shim's ``runc create`` down.
        """
        self._wanted = self._wanted or wanted
        if s is not None and not s.used and not self._closed and self._spare is None:
            self._spare = s
            self._watch(s)
        elif s is not None and not s.used:
            s.stop()

    def refill(self) -> None:
        """Start a spare in the background unless one waits or starts (or none is wanted)."""
        if self._closed or not self._wanted or self._spare is not None:
            return
        if self._starting is not None or self._failures >= MAX_FAILURES:
            return
        self._starting = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        try:
            s = await asyncio.to_thread(spare_shim.start, self.address, self._env())
        except OSError as exc:
            self._failures += 1
            log.warning("cannot start a spare shim: %s", exc)
            return
        finally:
            self._starting = None
        if self._closed or self._spare is not None:
            s.stop()
            return
        self._spare = s
        self._started_at = time.monotonic()
        self._watch(s)

    def _watch(self, s: Spare) -> None:
        asyncio.get_running_loop().add_reader(s.fileno(), self._on_readable, s)

    def _unwatch(self, s: Spare) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(s.fileno())
        if self._spare is s:
            self._spare = None

    def _on_readable(self, s: Spare) -> None:
        # A waiting spare never writes: readable means it is gone.
        self._unwatch(s)
        self._died(s)
        self.refill()

    def _died(self, s: Spare) -> None:
        young = time.monotonic() - self._started_at < YOUNG
        self._failures = self._failures + 1 if young else 0
        log.warning(
            "spare shim %d exited while waiting%s",
            s.pid,
            "; no more spares (see its output in this log)"
            if self._failures >= MAX_FAILURES
            else "",
        )
        s.stop()

    async def aclose(self) -> None:
        """Kill the waiting spare (and one being started); no spare after this."""
        self._closed = True
        starting = self._starting
        if starting is not None:
            with contextlib.suppress(BaseException):
                await starting
        s = self._spare
        if s is not None:
            self._unwatch(s)
            s.stop()
