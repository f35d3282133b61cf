"""How a task's or exec's stdio reaches this process (containerd's ``cio`` creators).

:class:`Stdio` says what each stream is connected to:

* ``Stdio.null()`` (the default): no stdio, the shim uses ``/dev/null``;
* ``Stdio.inherit()``: output copied to this process's stdout and stderr;
* ``Stdio.capture(stdin=b"...")``: output kept in memory, read with
  ``process.output()`` (an async iterator of chunks as they come) or
  ``process.read_output()`` (everything, once the process closed it);
* ``Stdio(stdin=fd, stdout=fd, stderr=fd)``: copied to and from file descriptors.

Named pipes (FIFOs) are made in a private directory under ``fifo_dir``
(default: ``/run/pycontainerd/fifo`` as root, else the temporary directory)
and opened for reading before the task exists, as the shim expects. Captured
output is read, and stdin bytes are fed, on the event loop (no thread; the
stdin FIFO is opened without blocking, tried again until the shim's reader is
there, and given up when the process's stdio is closed); descriptors are
copied by :class:`~pycontainerd.client.tasks.StdioCopier`'s threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.fdio import open_fifo_writer, retry_delays, write_all

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.client.tasks import StdioCopier

CAPTURE: Final = "capture"
_CHUNK: Final = 64 * 1024

Target = int | Literal["capture"] | None
"""A file descriptor, ``"capture"`` (kept in memory), or ``None`` (nothing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stdio:
    """Where a process's streams go; see the module docstring.

    Attributes:
        stdin: a file descriptor to read the input from, bytes to feed, or ``None``.
        stdout: where its output goes.
        stderr: where its error output goes (nothing with a terminal).
        terminal: give it a terminal (stdout carries the terminal's output).
        fifo_dir: where the FIFOs are made ("" for the default).
    """

    stdin: int | bytes | None = None
    stdout: Target = None
    stderr: Target = None
    terminal: bool = False
    fifo_dir: str = ""

    @classmethod
    def null(cls) -> Stdio:
        """No stdio at all."""
        return cls()

    @classmethod
    def inherit(cls, *, stdin: bool = False, terminal: bool = False) -> Stdio:
        """This process's stdout and stderr (and, with ``stdin``, its stdin)."""
        return cls(stdin=0 if stdin else None, stdout=1, stderr=2, terminal=terminal)

    @classmethod
    def capture(cls, stdin: bytes | None = None) -> Stdio:
        """Keep stdout and stderr in memory; feed ``stdin`` and then close it."""
        return cls(stdin=stdin, stdout=CAPTURE, stderr=CAPTURE)

    @property
    def is_null(self) -> bool:
        """Whether no stream is connected."""
        return self.stdin is None and self.stdout is None and self.stderr is None


@dataclass(frozen=True, slots=True)
class Output:
    """A process's captured output."""

    stdout: bytes = b""
    stderr: bytes = b""


@dataclass(slots=True)
class _Capture:
    """One FIFO read on the event loop into memory."""

    path: str
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    _fd: int = -1
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def open(self) -> None:
        # Non-blocking: the shim opens the write side when the task is
        # created; until then (and while it writes nothing) the FIFO is not
        # readable, and it reports end-of-file once the shim closed it.
        self._fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            chunk = os.read(self._fd, _CHUNK)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.chunks.append(chunk)
        else:
            self.close()
        self._changed.set()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        self.done = True
        self._changed.set()

    async def stream(self) -> AsyncIterator[bytes]:
        i = 0
        while True:
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.done:
                return
            self._changed.clear()
            await self._changed.wait()

    async def wait(self) -> bytes:
        while not self.done:
            self._changed.clear()
            await self._changed.wait()
        return b"".join(self.chunks)


class ProcessIO:
    """The FIFOs of one process and what copies them (made before the process exists)."""

    def __init__(self, process_id: str, stdio: Stdio | None) -> None:
        from pycontainerd.client.tasks import FifoSet, StdioCopier

        self.stdio = stdio or Stdio.null()
        s = self.stdio
        if s.terminal and s.stderr is not None:
            s = Stdio(
                stdin=s.stdin, stdout=s.stdout, stderr=None, terminal=True, fifo_dir=s.fifo_dir
            )
            self.stdio = s
        if s.terminal and s.stdout is None:
            msg = "a terminal needs stdout"
            raise InvalidArgumentError(msg)
        self.fifos = (
            FifoSet()
            if s.is_null
            else FifoSet.create(
                process_id, root=s.fifo_dir, stdin=s.stdin is not None, terminal=s.terminal
            )
        )
        self.captures: dict[str, _Capture] = {}
        self.copier: StdioCopier | None = None
        self._feeder: asyncio.Task[None] | None = None
        fds = {"stdout": s.stdout, "stderr": s.stderr}
        for name, target in fds.items():
            path = getattr(self.fifos, name)
            if target == CAPTURE and path:
                self.captures[name] = _Capture(path)
        stdin_fd = s.stdin if isinstance(s.stdin, int) else None
        out_fd = s.stdout if isinstance(s.stdout, int) else None
        err_fd = s.stderr if isinstance(s.stderr, int) else None
        if stdin_fd is not None or out_fd is not None or err_fd is not None:
            self.copier = StdioCopier(self.fifos, stdin=stdin_fd, stdout=out_fd, stderr=err_fd)

    def start_output(self) -> None:
        """Open the output FIFOs for reading (before the task or exec is created)."""
        for capture in self.captures.values():
            capture.open()
        if self.copier is not None:
            self.copier.start_output()

    def start_input(self) -> None:
        """Start feeding stdin (after the process started; call on the event loop)."""
        s = self.stdio
        if isinstance(s.stdin, bytes) and self.fifos.stdin:
            if self._feeder is None:
                self._feeder = asyncio.get_running_loop().create_task(
                    _feed(self.fifos.stdin, s.stdin)
                )
        elif self.copier is not None:
            self.copier.start_stdin()

    def stream(self, name: str) -> AsyncIterator[bytes]:
        """The captured ``name`` (``stdout``/``stderr``) as it comes.

        Raises:
            InvalidArgumentError: that stream is not captured.
        """
        capture = self.captures.get(name)
        if capture is None:
            msg = f"{name} is not captured: create the process with Stdio.capture()"
            raise InvalidArgumentError(msg)
        return capture.stream()

    async def read(self) -> Output:
        """Everything captured, once every captured stream reached end-of-file."""
        out = {name: await c.wait() for name, c in self.captures.items()}
        return Output(stdout=out.get("stdout", b""), stderr=out.get("stderr", b""))

    async def close(self, grace: float = 5.0) -> None:
        """Wait (at most ``grace`` seconds) for the output to end, then remove the FIFOs.

        Feeding stdin bytes stops here too, also when no process ever opened its stdin.
        """
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                for capture in self.captures.values():
                    await capture.wait()
        for capture in self.captures.values():
            capture.close()
        if self.copier is not None:
            copier = self.copier
            copier.stop_stdin()
            if not await asyncio.to_thread(copier.wait_output, grace):
                copier.unblock()
        self.fifos.remove()


async def _open_stdin(path: str) -> int:
    """The write end of the stdin FIFO ``path``, opened without blocking a thread.

    A non-blocking write-only open fails (ENXIO) while the FIFO has no reader:
    it is tried again, more and more slowly, until a reader came or the caller
    is cancelled (its process is deleted), never waiting for ever in ``open``.
    """
    delays = retry_delays()
    while (fd := open_fifo_writer(path)) is None:  # noqa: ASYNC110 - polls for a reader
        await asyncio.sleep(next(delays))
    return fd


async def _feed(path: str, data: bytes) -> None:
    """Write ``data`` into the stdin FIFO ``path`` and close it, on the event loop.

    Ends early when the reader goes away; cancelled by :meth:`ProcessIO.close`.
    """
    try:
        fd = await _open_stdin(path)
    except OSError:
        return  # the FIFO was removed
    try:
        await write_all(fd, data)
    except OSError:
        return  # the process closed its stdin (EPIPE)
    finally:
        os.close(fd)
