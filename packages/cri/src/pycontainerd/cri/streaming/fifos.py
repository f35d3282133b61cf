"""Bridging a process's stdio FIFOs (as a shim opens them) to streaming sessions.

An exec or attach through the runtime v2 shim API hands the shim FIFO paths;
the shim opens the write side of stdout/stderr and the read side of stdin.
These coroutines connect the other sides to a session's streams, without
blocking the event loop: opening a FIFO blocks until its peer opens it, so
the open runs in a worker thread, and cancelling unblocks that thread by
opening the peer side ourselves (a shim that never comes leaves no thread
behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycontainerd.core.fdio import write_all

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.cri.streaming.session import InputStream, OutputStream

CHUNK = 32 * 1024


@dataclass(frozen=True)
class ProcessFifos:
    """FIFO paths for one process ("" = that stream is not wanted)."""

    dir: str
    stdin: str
    stdout: str
    stderr: str

    @classmethod
    def create(
        cls, base: str | Path, name: str, *, stdin: bool, stdout: bool, stderr: bool
    ) -> ProcessFifos:
        """Make a private directory under ``base`` with the wanted FIFOs."""
        directory = tempfile.mkdtemp(prefix=f"{name}-", dir=base)
        paths = {}
        for stream, wanted in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
            paths[stream] = os.path.join(directory, stream) if wanted else ""
            if wanted:
                os.mkfifo(paths[stream], 0o600)
        return cls(directory, paths["stdin"], paths["stdout"], paths["stderr"])

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


async def _open(path: str, flags: int, unblock_flags: int) -> int:
    """``os.open`` that may wait for the FIFO's peer, cancellable."""
    fut = asyncio.ensure_future(asyncio.to_thread(os.open, path, flags | os.O_CLOEXEC))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        # Be the peer for a moment so the worker's open returns, then close both.
        # Until the worker is inside open(), a non-blocking writer finds no reader
        # (ENXIO): try again shortly.
        peer = None
        while not fut.done():
            try:
                peer = os.open(path, unblock_flags | os.O_NONBLOCK | os.O_CLOEXEC)
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    break
                await asyncio.sleep(0.005)
        with contextlib.suppress(BaseException):
            os.close(await fut)
        if peer is not None:
            os.close(peer)
        raise


async def copy_from_fifo(path: str, out: OutputStream) -> None:
    """Copy what the process writes to FIFO ``path`` into ``out`` until it closes its side."""
    await copy_from_fd(await _open(path, os.O_RDONLY, os.O_WRONLY), out)


async def copy_to_fifo(source: InputStream, path: str) -> None:
    """Copy ``source`` into FIFO ``path`` (the process's stdin); close it at end of input."""
    fd = await _open(path, os.O_WRONLY, os.O_RDONLY)
    loop = asyncio.get_running_loop()
    with os.fdopen(fd, "wb", buffering=0) as f:
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), f
        )
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        try:
            while data := await source.read():
                writer.write(data)
                await writer.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # the process closed its stdin
        finally:
            transport.close()


# -- without worker threads -------------------------------------------------------------
#
# The functions above wait for the peer in a worker thread. A process that exits
# before that thread runs (the daemon's pool is busy) has already closed its
# side, and the open then waits for ever. The pair below never waits: the
# caller opens its sides before the shim opens its own and starts copying once
# the shim has them open (after the process started).


def open_reader(path: str) -> int:
    """Our read side of an output FIFO, opened without waiting for a writer.

    Read from it only once the writer has opened its side: before, a read
    returns end of file.
    """
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


def open_writer(path: str) -> int:
    """Our write side of an input FIFO, opened read-write so it never waits.

    The reader sees end of file once this fd is closed (we are its only writer).
    """
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


async def copy_from_fd(fd: int, out: OutputStream) -> None:
    """Copy from the FIFO read side ``fd`` into ``out`` until end of file; closes ``fd``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK)
    with os.fdopen(fd, "rb", buffering=0) as f:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), f)
        try:
            while data := await reader.read(CHUNK):
                await out.write(data)
        finally:
            transport.close()


async def copy_to_fd(source: InputStream, fd: int) -> None:
    """Copy ``source`` into the FIFO write side ``fd`` (from :func:`open_writer`); closes it.

    The reader's end of input is the close at the end of ``source`` (or on cancellation).
    """
    try:
        while data := await source.read():
            await write_all(fd, data)
    finally:
        os.close(fd)
