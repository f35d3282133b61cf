r"""The progress tables of ``ctr images pull/push/import/export`` and ``ctr content fetch``.

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

:class:`TransferView` draws the progress events the daemon streams back
during a transfer (the default paths of ``ctr images pull/push/import/export``)
as containerd 2.x's ``ctr`` does: a tree of blobs under the image, the media
type and digest of each root, and a status line.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Self, TextIO

from pycontainerd.ctr.tabwriter import TabWriter
from pycontainerd.ctr.units import bytes_size

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.client.transfer import Progress as TransferEvent
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
    """Go's ``%<width>.<precision>s``/``v``: truncated, then right-aligned (left when < 0)."""
    value = value[:precision]
    return value.ljust(-width) if width < 0 else value.rjust(width)


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


class LiveView:
    """A drawing on ``out`` kept up to date while a transfer runs (a subclass renders it).

    Args:
        out: the stream (stdout).
        live: redraw in place every 100 ms (``None``: when ``out`` is a terminal).
        enabled: show nothing at all when false (``ctr --debug``, as upstream).
    """

    def __init__(self, out: TextIO, *, live: bool | None = None, enabled: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        if live is None:
            isatty = getattr(out, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self._lines = 0

    def render(self, *, color: bool, now: float | None = None) -> str:
        """The drawing as it stands (a subclass's job)."""
        raise NotImplementedError

    def draw(self) -> None:
        """Replace the previous drawing with the current one (terminal mode)."""
        text = self.render(color=True)
        self.out.write(CLEAR_LINE * self._lines + text)
        self.out.flush()
        self._lines = text.count("\n")

    def finish(self) -> None:
        """The last drawing: redrawn in place on a terminal, printed once otherwise."""
        if not self.enabled:
            return
        if self.live:
            self.draw()
        else:
            self.out.write(self.render(color=False))
            self.out.flush()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            self.draw()

    @contextlib.asynccontextmanager
    async def showing(self) -> AsyncIterator[Self]:
        """Redraw while the block runs (terminal mode); the final drawing when it ends well."""
        task = asyncio.create_task(self._refresh()) if self.enabled and self.live else None
        try:
            yield self
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.finish()


class Progress(LiveView):
    """Shows a tracker on ``out`` while a transfer runs (containerd 1.x's table).

    Args:
        tracker: what to show.
        out, live, enabled: as for :class:`LiveView`.
    """

    def __init__(
        self, tracker: Tracker, out: TextIO, *, live: bool | None = None, enabled: bool = True
    ) -> None:
        super().__init__(out, live=live, enabled=enabled)
        self.tracker = tracker

    def render(self, *, color: bool, now: float | None = None) -> str:
        """The tracker's table."""
        return render(self.tracker, color=color, now=now)


# -- transfer progress (containerd 2.x's ctr, streamed from the daemon) --------------------


@dataclass(slots=True)
class _Node:
    event: TransferEvent
    root: bool = True
    parents: tuple[str, ...] = ()
    children: list[_Node] = field(default_factory=list)

    def main_digest(self) -> tuple[str, str] | None:
        if self.event.digest:
            return self.event.media_type, self.event.digest
        for child in self.children:
            found = child.main_digest()
            if found is not None:
                return found
        return None


def _short(part: str) -> str:
    if part.startswith("sha256:") and len(part) == 71:
        return f"({part[7:19]})"
    return part


def _display_name(name: str) -> str:
    return " ".join(_short(p) for p in name.split("-"))


class TransferView(LiveView):
    """The tree of a transfer's progress events, drawn as containerd 2.x's ``ctr`` draws it.

    Each event with a name becomes a node under the nodes named as its parents
    (``layer (abcdef012345)`` under the image reference); events without a
    name set the status line. :meth:`handle` takes the events
    (``Client.transfer(progress=view.handle)``).
    """

    def __init__(self, out: TextIO, *, live: bool | None = None, enabled: bool = True) -> None:
        super().__init__(out, live=live, enabled=enabled)
        self.status = ""
        self.nodes: dict[str, _Node] = {}
        self.roots: list[_Node] = []
        self.started = time.monotonic()

    def handle(self, event: TransferEvent) -> None:
        """Take one progress event."""
        if not event.name:
            self.status = event.event
            return
        node = self.nodes.get(event.name)
        known = tuple(p for p in event.parents if p in self.nodes)
        if node is None:
            node = self.nodes[event.name] = _Node(event=event, parents=known)
            for parent in known:
                self.nodes[parent].children.append(node)
            node.root = not known
            if node.root:
                self.roots.append(node)
            return
        if event.parents and len(event.parents) != len(node.parents):
            for parent in known:
                if node not in self.nodes[parent].children:
                    self.nodes[parent].children.append(node)
            if known and node.root:
                node.root = False
                self.roots.remove(node)
            node.parents = known
        node.event = event

    def _lines_of(self, tw: TabWriter, prefix: str, nodes: list[_Node], color: bool) -> int:
        total = 0
        for i, node in enumerate(nodes):
            e = node.event
            total += e.progress
            last = i + 1 == len(nodes)
            pf, cpf = ("└──", "   ") if last else ("├──", "│  ")
            if node.root:
                pf, cpf = "", ""
            name = _go_string(prefix + pf + _display_name(e.name), -40, 40)
            if e.event in _ACTIVE:
                fraction = e.progress / e.total if e.total > 0 else 0.0
                tw.write(
                    f"{name}\t{e.event:<11}\t{bar(fraction, color=color)}\t"
                    f"{_go_string(bytes_size(e.progress), 8, 8)}/{bytes_size(e.total)}\t\n"
                )
            elif e.event in ("resolving", "waiting"):
                tw.write(f"{name}\t{e.event:<11}\t{bar(0.0, color=color)}\t\n")
            elif e.event == "complete":
                tw.write(f"{name}\t{e.event:<11}\t{bar(1.0, color=color)}\t\n")
            else:
                tw.write(f"{name}\t{e.event}\t\n")
            total += self._lines_of(tw, prefix + cpf, node.children, color)
        return total

    def render(self, *, color: bool, now: float | None = None) -> str:
        """The tree and the status line as text."""
        buf = io.StringIO()
        tw = TabWriter(buf, 1, 8, 1, " ")
        total = self._lines_of(tw, "", self.roots, color)
        for root in self.roots:
            found = root.main_digest()
            if found is not None:
                tw.write(f"{found[0]} {found[1]}\n")
        elapsed = (now if now is not None else time.monotonic()) - self.started
        rate = total / elapsed if elapsed > 0 else 0.0
        tw.write(
            f"{self.status}\telapsed: {elapsed:<4.1f}s\ttotal: "
            f"{_go_string(bytes_size(total), 7, 6)}\t({bytes_size(int(rate))}/s)\t\n"
        )
        tw.flush()
        return buf.getvalue()
