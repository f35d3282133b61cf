"""Stack dumps of every thread and every asyncio task (SIGUSR1, debug endpoint)."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import FrameType


def _plain(frames: list[FrameType]) -> str:
    """A robust rendering for frames ``traceback`` cannot format (no line number)."""
    return "".join(
        f'  File "{f.f_code.co_filename}", line {f.f_lineno or 0}, in {f.f_code.co_name}\n'
        for f in frames
    )


def _format_frames(frames: list[FrameType]) -> str:
    try:
        summary = traceback.StackSummary.extract(
            ((f, f.f_lineno) for f in frames), lookup_lines=True
        )
        return "".join(summary.format())
    except (TypeError, ValueError):
        return _plain(frames)


def _thread_frames(frame: FrameType | None) -> list[FrameType]:
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    out.reverse()
    return out


def dump_stacks(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every thread's current stack, then every pending asyncio task's stack.

    Args:
        loop: the loop whose tasks to include; the running loop when omitted.
    """
    out = io.StringIO()
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"thread {ident} [{names.get(ident, '?')}]:\n")
        out.write(_format_frames(_thread_frames(frame)))
        out.write("\n")
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:  # no running loop
        tasks = set()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"task {task.get_name()} [{task.get_coro()!r}]:\n")
        try:
            frames = task.get_stack()
        except Exception:
            frames = []
        out.write(_format_frames(frames))
        out.write("\n")
    return out.getvalue()
