"""Container stdio for the CRI: FIFOs the shim writes, read by the daemon.

The plugin makes a FIFO per output stream and hands its path to the shim
(which opens it read-write, so it never blocks). The daemon's end
(:class:`OutputFifo`) is opened without blocking *before* the shim is asked
to create the process, and read on the event loop until EOF, which comes
when the shim closes its end after the process's output is drained. No open
ever waits in a worker thread: such an open, queued behind other work, could
run after a quickly exiting process's shim had already closed its end, and
then wait for ever. Until the shim has opened its end, the reader holds a
write end of its own (released by :meth:`OutputFifo.release` once the shim
has the FIFO open, or has failed), so reading can start at once without
seeing an early end of file.

CRI log lines (``<RFC3339Nano> stdout|stderr F|P <text>``) are written with
``os.write`` to the log file opened for appending; a line longer than
``max_container_log_line_size`` is split into ``P`` (partial) pieces ending
with an ``F`` piece. Reading pauses while a write is in progress, so output is
never dropped: a container writing faster than the disk is slowed down by its
full pipe.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path

_CHUNK = 64 * 1024
log = logging.getLogger(__name__)


def make_fifo(path: Path) -> Path:
    """Create the FIFO ``path`` (its directory too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.mkfifo(path, 0o600)
    return path


class OutputFifo:
    """The daemon's read end of an output FIFO, opened without waiting for the shim.

    With ``hold`` (the shim has not opened the FIFO yet) a write end is kept
    open too, so that a read before the shim's open does not return end of
    file; :meth:`release` it once the shim has opened its end (after its
    Create/Exec and Start returned) or will never do so (they failed).
    Without ``hold`` (after a daemon restart, the shim has it open already)
    end of file comes as soon as the shim's end is closed.
    """

    def __init__(self, path: Path, *, hold: bool = True) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        self._hold = -1
        if hold:
            try:
                self._hold = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except BaseException:
                os.close(self.fd)
                raise

    def release(self) -> None:
        """Close our own write end: end of file comes once the shim's end is closed."""
        if self._hold >= 0:
            os.close(self._hold)
            self._hold = -1

    def take(self) -> int:
        """The read end's fd, now owned by the caller."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            msg = f"{self.path}: already read"
            raise ValueError(msg)
        return fd

    def close(self) -> None:
        """Close what is still ours (a reader that never started leaves its fd here)."""
        self.release()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


async def read_chunks(fifo: OutputFifo) -> AsyncIterator[bytes]:
    """The bytes written into ``fifo`` until its writers are gone (closes its read end)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_CHUNK)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_read_pipe(lambda: protocol, os.fdopen(fifo.take(), "rb", 0))
    try:
        while chunk := await reader.read(_CHUNK):
            yield chunk
    finally:
        transport.close()


def timestamp(when: datetime | None = None) -> str:
    """Go's RFC3339Nano in UTC: nanosecond fraction with trailing zeros trimmed."""
    now = when or datetime.now(UTC)
    ns = now.microsecond * 1000
    frac = f".{ns:09d}".rstrip("0").rstrip(".") if ns else ""
    return now.strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def cri_lines(stream: str, data: bytes, max_size: int) -> list[bytes]:
    """CRI log lines for one complete line of output (without its newline)."""
    out: list[bytes] = []
    pieces = [data[i : i + max_size] for i in range(0, len(data), max_size)] if max_size else [data]
    pieces = pieces or [b""]
    for index, piece in enumerate(pieces):
        tag = b"F" if index == len(pieces) - 1 else b"P"
        out.append(f"{timestamp()} {stream} ".encode() + tag + b" " + piece + b"\n")
    return out


class LogFile:
    """A container's CRI log file, shared by its stdout and stderr copiers.

    A file that cannot be opened or written (its directory is gone, the disk
    is full) does not stop the copying: output is then read and dropped, so
    the container never blocks on a full pipe, and :meth:`reopen` (the CRI's
    ReopenContainerLog, after a log rotation) tries again.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.dropped = 0
        self.error = ""
        self.reopen()

    def reopen(self) -> None:
        """Close and open the file again (creating it).

        Raises:
            OSError: it cannot be opened; output is dropped until a reopen works.
        """
        self.close()
        try:
            self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self.error = ""
        except OSError as exc:
            self.error = f"{self.path}: {exc.strerror}"
            log.warning("container log %s", self.error)
            raise

    def write(self, data: bytes) -> None:
        if self.fd < 0:
            self.dropped += len(data)
            return
        try:
            os.write(self.fd, data)
        except OSError as exc:
            self.dropped += len(data)
            if not self.error:
                self.error = f"{self.path}: {exc.strerror}"
                log.warning("container log %s", self.error)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def open_log(path: str) -> LogFile:
    """A :class:`LogFile`, also when it cannot be opened yet (then it drops output)."""
    with contextlib.suppress(OSError):
        return LogFile(path)
    holder = LogFile.__new__(LogFile)
    holder.path, holder.fd, holder.dropped, holder.error = path, -1, 0, "not opened"
    return holder


async def copy_to_log(
    fifo: OutputFifo,
    stream: str,
    out: LogFile,
    max_size: int,
    tee: Callable[[str, bytes], None] | None = None,
) -> None:
    """Turn the output read from ``fifo`` into CRI log lines in ``out``.

    ``tee`` also gets every chunk as read (attached sessions, see :mod:`.attach`).
    """
    pending = b""
    async for chunk in read_chunks(fifo):
        if tee is not None:
            tee(stream, chunk)
        pending += chunk
        *lines, pending = pending.split(b"\n")
        lines_out = [ln for line in lines for ln in cri_lines(stream, line, max_size)]
        while max_size and len(pending) >= max_size:
            head, pending = pending[:max_size], pending[max_size:]
            lines_out.append(f"{timestamp()} {stream} P ".encode() + head + b"\n")
        if lines_out:
            out.write(b"".join(lines_out))
    if pending:
        out.write(b"".join(cri_lines(stream, pending, max_size)))


async def collect(fifo: OutputFifo, limit: int) -> bytes:
    """Everything written into ``fifo`` (at most ``limit`` bytes kept)."""
    buf = bytearray()
    async for chunk in read_chunks(fifo):
        if len(buf) < limit:
            buf += chunk[: limit - len(buf)]
    return bytes(buf)
