"""A running container's stdio as CRI Attach sessions see it.

The container's output reaches the daemon through the FIFOs its CRI log is
copied from (:mod:`pycontainerd.cri.cio`); :class:`ContainerStdio` hands a
copy of every chunk to each attached session. A container created with
``stdin`` gets a stdin FIFO whose write side the daemon keeps open for the
container's lifetime (opened read-write, so it never blocks and the shim's
read-only open finds a writer at once); attached sessions write into it.
Closing that side is the container's end of input: the daemon does so when a
``stdin_once`` container's first attached stdin ends, as containerd does.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

MAX_PENDING = 16 * 1024 * 1024
"""Bytes a session may fall behind before it is detached (the container never waits for it)."""


class Subscriber:
    """One attached session's copy of the output: ``(stream, data)`` items, None at the end."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self.pending = 0
        self.dropped = False

    def put(self, stream: str, data: bytes) -> None:
        if self.dropped:
            return
        if self.pending + len(data) > MAX_PENDING:
            self.dropped = True
            self.queue.put_nowait(None)
            return
        self.pending += len(data)
        self.queue.put_nowait((stream, data))

    async def get(self) -> tuple[str, bytes] | None:
        item = await self.queue.get()
        if item is not None:
            self.pending -= len(item[1])
        return item


class ContainerStdio:
    """The attach side of one container's stdio."""

    def __init__(self, *, tty: bool = False, stdin_once: bool = False) -> None:
        self.tty = tty
        self.stdin_once = stdin_once
        self.stdin_fd = -1
        self.output_ended = False
        self._subscribers: set[Subscriber] = set()
        self._stdin_lock = asyncio.Lock()
        self._waiter: asyncio.Future[None] | None = None

    @classmethod
    def for_config(cls, config: Mapping[str, Any]) -> ContainerStdio:
        """From a CRI ContainerConfig (as a dict with the proto's field names)."""
        return cls(tty=bool(config.get("tty")), stdin_once=bool(config.get("stdin_once")))

    # -- output -------------------------------------------------------------------

    def publish(self, stream: str, data: bytes) -> None:
        """A chunk the container wrote to ``stream`` (``stdout`` or ``stderr``)."""
        for sub in self._subscribers:
            sub.put(stream, data)

    def end_output(self) -> None:
        """The container's output is closed: every session's output ends."""
        self.output_ended = True
        for sub in self._subscribers:
            sub.queue.put_nowait(None)
        self._subscribers.clear()

    def subscribe(self) -> Subscriber:
        sub = Subscriber()
        if self.output_ended:
            sub.queue.put_nowait(None)
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    # -- input --------------------------------------------------------------------

    @property
    def has_stdin(self) -> bool:
        return self.stdin_fd >= 0

    def open_stdin(self, path: Path) -> str:
        """Make the stdin FIFO ``path`` and hold its write side; returns the path for the shim."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.mkfifo(path, 0o600)
        self.stdin_fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        return str(path)

    async def write_stdin(self, data: bytes) -> None:
        """Write ``data`` to the container's stdin, waiting while its pipe is full.

        Raises:
            BrokenPipeError: stdin is closed.
        """
        loop = asyncio.get_running_loop()
        async with self._stdin_lock:
            view = memoryview(data)
            while view:
                fd = self.stdin_fd
                if fd < 0:
                    msg = "container stdin is closed"
                    raise BrokenPipeError(msg)
                try:
                    n = os.write(fd, view)
                except BlockingIOError:
                    self._waiter = loop.create_future()
                    loop.add_writer(fd, _wake, self._waiter)
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                        if self.stdin_fd == fd:
                            loop.remove_writer(fd)
                    continue
                view = view[n:]

    def close_stdin(self) -> None:
        """The container reads EOF once it has read what was written; idempotent."""
        fd, self.stdin_fd = self.stdin_fd, -1
        if fd >= 0:
            if self._waiter is not None:
                asyncio.get_running_loop().remove_writer(fd)
                _wake(self._waiter)
            os.close(fd)

    def close(self) -> None:
        self.close_stdin()
        self.end_output()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
