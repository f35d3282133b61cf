"""Stack dumps of every thread and every asyncio task (SIGUSR1, debug endpoint)."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import traceback


def dump_stacks(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """Every thread's current stack, then every pending asyncio task's stack.

    Args:
        loop: the loop whose tasks to include; the running loop when omitted.
    """
    out = io.StringIO()
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        out.write(f"thread {ident} [{names.get(ident, '?')}]:\n")
        out.writelines(traceback.format_stack(frame))
        out.write("\n")
    try:
        tasks = asyncio.all_tasks(loop)
    except RuntimeError:  # no running loop
        tasks = set()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"task {task.get_name()} [{task.get_coro()!r}]:\n")
        buf = io.StringIO()
        task.print_stack(file=buf)
        out.write(buf.getvalue())
        out.write("\n")
    return out.getvalue()
