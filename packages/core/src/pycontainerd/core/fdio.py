"""Writing to a non-blocking pipe or FIFO from the event loop, without a thread."""

from __future__ import annotations

import asyncio
import os


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
