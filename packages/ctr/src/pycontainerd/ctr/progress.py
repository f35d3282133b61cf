r"""The transfer progress table of ``ctr images pull/push`` and ``ctr content fetch``.

:func:`render` lays a :class:`~pycontainerd.remotes.progress.Tracker` out as
upstream's ``Display`` does, one line per blob and a total::

    <ref>:  <status>  |<bar>|  <offset>/<total>
    elapsed: 1.2 s  total:  12.0 M  (10.0 MiB/s)

through a Go tabwriter (minwidth 1, tabwidth 8, padding 1), with a 40-column
bar of ``+`` and ``-`` (green ``+`` on a terminal). :class:`Progress`
redraws the table in place every 100 ms when stdout is a terminal (each
redraw moves up over the previous one with ``ESC[1A ESC[2K``, as upstream's
``progress.Writer``), and otherwise prints the final table once, without
escape sequences, when the transfer ends.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from typing import TYPE_CHECKING, Final, TextIO

from pycontainerd.ctr.tabwriter import TabWriter
from pycontainerd.ctr.units import bytes_size

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.remotes.progress import Tracker

BAR_WIDTH: Final = 40
REFRESH_SECONDS: Final = 0.1
GREEN: Final = "\x1b[32m"
RESET: Final = "\x1b[0m"
CLEAR_LINE: Final = "\x1b[1A\x1b[2K\r"

_ACTIVE: Final = frozenset({"downloading", "uploading"})
_EMPTY: Final = frozenset({"resolving", "waiting", "error"})


def bar(fraction: float, *, color: bool, width: int = BAR_WIDTH) -> str:
    """``|+++---|`` of ``width`` columns, ``fraction`` of the inside filled."""
    fraction = min(max(fraction, 0.0), 1.0)
    inner = width - 2
    filled = int(inner * fraction)
    plus = "+" * filled
    if color:
        plus = f"{GREEN}{plus}{RESET}"
    return f"|{plus}{'-' * (inner - filled)}|"


def _go_string(value: str, width: int, precision: int) -> str:
    """Go's ``%<width>.<precision>s``/``v`` of a string: truncated, then right-aligned."""
    return value[:precision].rjust(width)


def render(tracker: Tracker, *, color: bool, now: float | None = None) -> str:
    """The table for ``tracker`` as text (every line ends with a newline)."""
    buf = io.StringIO()
    tw = TabWriter(buf, 1, 8, 1, " ")
    total = 0
    for job in list(tracker.jobs.values()):
        if job.status in _ACTIVE:
            fraction = job.offset / job.total if job.total > 0 else 0.0
            tw.write(
                f"{job.ref}:\t{job.status}\t{bar(fraction, color=color)}\t"
                f"{_go_string(bytes_size(job.offset), 8, 8)}/{bytes_size(job.total)}\t\n"
            )
        elif job.status in _EMPTY:
            tw.write(f"{job.ref}:\t{job.status}\t{bar(0.0, color=color)}\t\n")
        else:
            tw.write(f"{job.ref}:\t{job.status}\t{bar(1.0, color=color)}\t\n")
        if job.status != "exists":
            total += job.offset
    elapsed = (now if now is not None else time.monotonic()) - tracker.started
    rate = total / elapsed if elapsed > 0 else 0.0
    tw.write(
        f"elapsed: {elapsed:<4.1f}s\ttotal: {_go_string(bytes_size(total), 7, 6)}\t"
        f"({bytes_size(int(rate))}/s)\t\n"
    )
    tw.flush()
    return buf.getvalue()


class Progress:
    """Shows a tracker on ``out`` while a transfer runs.

    Args:
        tracker: what to show.
        out: the stream (stdout).
        live: redraw in place every 100 ms (``None``: when ``out`` is a terminal).
        enabled: show nothing at all when false (``ctr --debug``, as upstream).
    """

    def __init__(
        self, tracker: Tracker, out: TextIO, *, live: bool | None = None, enabled: bool = True
    ) -> None:
        self.tracker = tracker
        self.out = out
        self.enabled = enabled
        if live is None:
            isatty = getattr(out, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self._lines = 0

    def draw(self) -> None:
        """Replace the previous table with the current one (terminal mode)."""
        text = render(self.tracker, color=True)
        self.out.write(CLEAR_LINE * self._lines + text)
        self.out.flush()
        self._lines = text.count("\n")

    def finish(self) -> None:
        """The last table: redrawn in place on a terminal, printed once otherwise."""
        if not self.enabled:
            return
        if self.live:
            self.draw()
        else:
            self.out.write(render(self.tracker, color=False))
            self.out.flush()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            self.draw()

    @contextlib.asynccontextmanager
    async def showing(self) -> AsyncIterator[Progress]:
        """Redraw while the block runs (terminal mode); the final table when it ends well."""
        task = asyncio.create_task(self._refresh()) if self.enabled and self.live else None
        try:
            yield self
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.finish()
