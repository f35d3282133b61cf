"""Writing to a non-blocking pipe or FIFO from the event loop, without a thread.

And opening a FIFO's write end without waiting in ``open(2)`` for a reader.
"""

from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator


async def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to the non-blocking ``fd``, waiting on the loop while it is full.

    Raises:
        OSError: the write failed (``BrokenPipeError`` once the reader closed its side).
    """
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, _set_done, writable)
            try:
                await writable
            finally:
                loop.remove_writer(fd)


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def open_fifo_writer(path: str) -> int | None:
    """The write end of the FIFO ``path``, non-blocking, or ``None`` while it has no reader.

    A blocking write-only open would wait for ever for a reader that may be
    gone; a non-blocking one fails with ENXIO instead. Callers try again
    after each of :func:`retry_delays`, until they are told to stop.
    """
    try:
        return os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno != errno.ENXIO:
            raise
        return None


def retry_delays(longest: float = 0.1) -> Iterator[float]:
    """Seconds to wait between tries: 1 ms, then twice as long each time, at most ``longest``."""
    delay = 0.001
    while True:
        yield delay
        delay = min(delay * 2, longest)
