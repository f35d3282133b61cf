"""A process's stdio: the client's FIFOs, copied to and from pipes or a pty.

The client (``ctr``, the daemon) creates FIFOs and passes their paths. The
container never gets the FIFOs themselves: like upstream's shim, this one gives
it pipes (or a pty) and copies, so a client that goes away cannot kill the
container with SIGPIPE. No FIFO open ever blocks, as with containerd's fifo
package: output FIFOs are opened read-write, which keeps a reader on them; a
client that stops reading applies back-pressure (the copy pauses, the
container's pipe fills). The stdin FIFO is opened ``O_RDONLY | O_NONBLOCK``, so
the client closing its end reaches the container as EOF, and a client that
never opens it (gone, or never got that far) holds nothing in the shim;
``CloseIO`` ends stdin too, after copying what the client had already written
into the FIFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
from typing import Final

__all__ = ["ProcessIO", "Pump"]

log = logging.getLogger(__name__)

_CHUNK: Final = 32 * 1024


def _nonblocking(fd: int) -> int:
    os.set_blocking(fd, False)
    return fd


class Pump:
    """Copies bytes from ``src`` to ``dst`` on the event loop until EOF, then closes both.

    ``close_dst`` False leaves ``dst`` open (a pty master written by two pumps).
    After :meth:`drain`, "nothing to read right now" counts as EOF too: what
    was written into ``src`` before is still copied, then the pump finishes.
    """

    def __init__(self, src: int, dst: int, *, close_dst: bool = True, name: str = "") -> None:
        self._loop = asyncio.get_running_loop()
        self.src = _nonblocking(src)
        self.dst = _nonblocking(dst)
        self._close_dst = close_dst
        self._pending = b""
        self._eof = False
        self._drain = False
        self.name = name
        self.done: asyncio.Future[None] = self._loop.create_future()
        self._loop.add_reader(self.src, self._readable)

    def _readable(self) -> None:
        if self.done.done() or self._pending:
            return
        try:
            data = os.read(self.src, _CHUNK)
        except BlockingIOError:
            if not self._drain:
                return
            data = b""  # draining: the source is empty, so this is the end
        except OSError as exc:
            # EIO: the pty's other side is gone, the usual end of a terminal.
            if exc.errno not in {errno.EIO, errno.EBADF}:
                log.debug("stdio %s: read: %s", self.name, exc)
            data = b""
        if not data:
            self._eof = True
            self._loop.remove_reader(self.src)
            if not self._pending:
                self.finish()
            return
        self._write(data)
        if self._drain and not self._pending:
            # An empty source with a writer still open never wakes the reader: poll once more.
            self._loop.call_soon(self._readable)

    def drain(self) -> None:
        """Copy what ``src`` holds now, then finish (``CloseIO``: no later input is wanted)."""
        if self.done.done() or self._drain:
            return
        self._drain = True
        if not self._pending:
            self._loop.call_soon(self._readable)

    def _write(self, data: bytes) -> None:
        try:
            n = os.write(self.dst, data)
        except BlockingIOError:
            n = 0
        except OSError as exc:
            log.debug("stdio %s: write: %s", self.name, exc)
            self.finish()
            return
        if n < len(data):
            self._pending = data[n:]
            self._loop.remove_reader(self.src)
            self._loop.add_writer(self.dst, self._writable)

    def _writable(self) -> None:
        data, self._pending = self._pending, b""
        self._loop.remove_writer(self.dst)
        self._write(data)
        if self._pending or self.done.done():
            return
        if self._eof:
            self.finish()
        else:
            self._loop.add_reader(self.src, self._readable)
            if self._drain:
                self._loop.call_soon(self._readable)

    def flush_now(self, limit: int = 1 << 20) -> None:
        """Copy what ``src`` holds right now to ``dst`` without waiting, then finish.

        For a process being deleted: its output may still sit in the pipe when
        the loop had no time to copy it (a loaded machine), and the client
        reads the FIFO until we close it. At most ``limit`` bytes; a FIFO that
        is full keeps what does not fit out, as nobody reads it.
        """
        if self.done.done():
            return
        data = self._pending
        self._pending = b""
        while len(data) < limit:
            try:
                chunk = os.read(self.src, _CHUNK)
            except OSError:  # nothing more now (EAGAIN), or the source is gone
                break
            if not chunk:
                break
            data += chunk
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.dst, view)
            except OSError:
                break
            view = view[n:]
        self.finish()

    def finish(self) -> None:
        """Stop copying and close the fds (idempotent)."""
        if self.done.done():
            return
        self._loop.remove_reader(self.src)
        self._loop.remove_writer(self.dst)
        with contextlib.suppress(OSError):
            os.close(self.src)
        if self._close_dst:
            with contextlib.suppress(OSError):
                os.close(self.dst)
        self.done.set_result(None)


class ProcessIO:
    """The stdio of one container process.

    Before the process starts, :meth:`child_fds` gives the fds runc must hand
    to it (pipes; for a terminal, nothing: runc makes a pty and sends its
    master to the console socket, see :meth:`attach_console`). After the spawn,
    :meth:`started` closes the child's ends here and starts copying. With
    ``owner`` (runc options ``IoUid``/``IoGid``) the pipes belong to that uid
    and gid, as upstream's shim makes them, so a process of that user can
    reopen them (``/proc/self/fd/1``, ``/dev/stdout``).
    """

    def __init__(
        self,
        stdin: str,
        stdout: str,
        stderr: str,
        *,
        terminal: bool,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.stdin_path = stdin
        self.stdout_path = stdout
        self.stderr_path = stderr
        self.terminal = terminal
        self.owner = owner
        self._child: list[int] = []
        self._pumps: list[Pump] = []
        self._stdin_w: int | None = None  # our end of the container's stdin pipe
        self._stdin_pipe_r: int | None = None
        self._out_pipes: list[tuple[int, str]] = []
        self.console: int | None = None
        self._stdin_eof = False  # CloseIO came: end stdin once the FIFO is drained

    def child_fds(self) -> tuple[int | None, int | None, int | None]:
        """Create the pipes and return the fds for the child's stdin, stdout, stderr."""
        if self.terminal:
            return None, None, None
        fds: list[int | None] = [None, None, None]
        if self.stdin_path:
            r, w = os.pipe()
            self._stdin_pipe_r, self._stdin_w = r, w
            self._child.append(r)
            fds[0] = r
        for index, path in ((1, self.stdout_path), (2, self.stderr_path)):
            if path:
                r, w = os.pipe()
                self._child.append(w)
                self._out_pipes.append((r, path))
                fds[index] = w
        if self.owner is not None:
            for fd in self._child:  # both ends of a pipe share its inode
                os.fchown(fd, *self.owner)
        return fds[0], fds[1], fds[2]

    def started(self) -> None:
        """The child has its fds: close ours and start the output and input copies."""
        for fd in self._child:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child.clear()
        for r, path in self._out_pipes:
            self._pumps.append(Pump(r, self._open_output(path), name=path))
        self._out_pipes.clear()
        if self._stdin_w is not None:
            self._start_stdin(self._stdin_w, close_dst=True)

    def attach_console(self, master: int) -> None:
        """Copy between the pty ``master`` and the FIFOs (terminal processes)."""
        self.console = master
        if self.stdout_path:
            self._pumps.append(
                Pump(os.dup(master), self._open_output(self.stdout_path), name="console")
            )
        if self.stdin_path:
            self._start_stdin(master, close_dst=False)

    @staticmethod
    def _open_output(path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def _start_stdin(self, dst: int, *, close_dst: bool) -> None:
        """Open the stdin FIFO for reading without blocking, then copy it to ``dst``.

        ``O_RDONLY | O_NONBLOCK`` returns at once whether or not the client has
        opened its writer (a blocking open would wait in the kernel for a
        writer that may never come: a client that went away, or never got that
        far, would pin a thread and keep the task's rootfs mounted). A FIFO no
        writer has opened yet reports nothing to epoll; the copy wakes when the
        client writes, and reads end-of-file once the client, having opened its
        end, closes it.
        """
        try:
            fd = os.open(self.stdin_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("stdin %s: %s", self.stdin_path, exc)
            if close_dst:
                self._close_stdin_w()  # no input will ever come: EOF
            return
        pump = Pump(fd, dst, close_dst=close_dst, name="stdin")
        self._pumps.append(pump)
        if close_dst:
            self._stdin_w = None  # the pump owns it now
        if self._stdin_eof:
            pump.drain()

    def close_stdin(self) -> None:
        """End the process's stdin (``CloseIO``) after what the client already wrote.

        Bytes already in the FIFO are still copied to the process; then its
        stdin pipe is closed (for a terminal, the copy to the pty stops).
        """
        self._stdin_eof = True
        pumps = [p for p in self._pumps if p.name == "stdin"]
        for pump in pumps:
            pump.drain()
        if not pumps:
            self._close_stdin_w()  # the copy has not started (or never will)

    def _close_stdin_w(self) -> None:
        if self._stdin_w is not None:
            with contextlib.suppress(OSError):
                os.close(self._stdin_w)
            self._stdin_w = None

    async def wait_output(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Wait (at most ``timeout`` s) until the output copies reached EOF."""
        outs = [p.done for p in self._pumps if p.name != "stdin"]
        if outs:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*outs)

    def close(self) -> None:
        """Stop all copies and close every fd (the process is deleted)."""
        self._close_stdin_w()
        for pump in self._pumps:
            if pump.name == "stdin":
                pump.finish()
            else:
                pump.flush_now()  # output the loop had no time to copy yet
        for fd in self._child:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child.clear()
        for r, _ in self._out_pipes:
            with contextlib.suppress(OSError):
                os.close(r)
        self._out_pipes.clear()
        if self.console is not None:
            with contextlib.suppress(OSError):
                os.close(self.console)
            self.console = None
