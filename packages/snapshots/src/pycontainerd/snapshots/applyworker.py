"""Layer applies in worker processes: the walking differ's extraction, off the daemon's GIL.

A daemon that pulls an image downloads and applies at once. In one process
the two take turns on one GIL: each of the applier's system calls (four per
file) gives the GIL away, and taking it back waits for the downloads' Python.
A worker process applies with a GIL of its own, on another core when one is
free, and the scheduler counts it as a process of its own on a busy machine.

The worker runs the same code as the in-thread path
(``differ._apply_chunks``: inflate, digest, every check of the archive
reader, extraction); only the process differs. The daemon hands it one
request per layer over a ``SOCK_SEQPACKET`` socket pair: the blob's open file
descriptor (``SCM_RIGHTS``) and a JSON header (size, compression, target
directory, overlay layout, sync), and reads one JSON reply: the diff ID and
size, or the error (its kind and message, or errno and file name).

Lifecycle:

- Workers start on demand (``python -m pycontainerd.snapshots.applyworker``),
  or ahead of a pull with :meth:`ApplyWorkers.prestart`; never at daemon
  start. After an apply a worker waits for the next one (at most
  ``max_idle`` do; an idle worker exits after ``idle_seconds``).
- An apply that is cancelled (a pull that failed elsewhere) kills its worker
  and reaps it before returning, so nothing writes into the snapshot once the
  caller removes it.
- A worker that dies mid-apply fails that apply with :class:`InternalError`
  (the caller does not commit the snapshot); the next apply starts another.
- :meth:`ApplyWorkers.aclose` (daemon stop) closes every worker's socket and
  reaps it. A worker exits at end of file on its socket, and is killed when
  the daemon dies (``PR_SET_PDEATHSIG``).

Importing this module must not import grpc; neither does the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.core import errdefs

if TYPE_CHECKING:
    from pycontainerd.snapshots.apply import OverlayUpper

__all__ = ["ApplyWorkers"]

_MAX_MESSAGE: Final = 1 << 16
_PR_SET_PDEATHSIG: Final = 1
#: Seconds an apply's worker may take to exit once killed or closed.
_REAP_SECONDS: Final = 10.0


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    expiry: asyncio.TimerHandle | None = field(default=None)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.sock.close()


async def _reap(worker: _Worker) -> int | None:
    """Wait for ``worker`` to exit, killing it if it takes too long; its exit code.

    A caller cancelled meanwhile still waits (then raises ``CancelledError``):
    whoever removes what the worker wrote must know it has stopped.
    """
    cancelled = False
    for _ in range(2):
        waiting = asyncio.ensure_future(asyncio.to_thread(worker.proc.wait, _REAP_SECONDS))
        while not waiting.done():
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                cancelled = True
            except subprocess.TimeoutExpired:
                pass
        if waiting.exception() is None:
            break
        worker.kill()  # closed but still running: stop it
    if cancelled:
        raise asyncio.CancelledError
    return worker.proc.returncode


def _exit_text(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


class ApplyWorkers:
    """A pool of applier processes for the walking differ."""

    def __init__(self, *, max_idle: int = 1, idle_seconds: float = 300.0) -> None:
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._retiring: set[asyncio.Future[int | None]] = set()
        self._closed = False

    def pids(self) -> list[int]:
        """The process IDs of the workers alive now (idle or applying)."""
        return [w.proc.pid for w in (*self._idle, *self._busy) if w.proc.poll() is None]

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        return _Worker(proc, ours)

    def prestart(self) -> None:
        """Start a worker now unless one is idle, so the next apply does not wait for it."""
        if not self._closed and not self._idle:
            self._park(self._spawn())

    def _take(self) -> _Worker:
        if self._closed:
            msg = "the layer applier is shut down"
            raise errdefs.UnavailableError(msg)
        while self._idle:
            worker = self._idle.pop()
            if worker.expiry is not None:
                worker.expiry.cancel()
                worker.expiry = None
            if worker.proc.poll() is None:
                self._busy.add(worker)
                return worker
            worker.kill()  # died while idle: reaped by poll()
        worker = self._spawn()
        self._busy.add(worker)
        return worker

    def _park(self, worker: _Worker) -> None:
        if self._closed or len(self._idle) >= self.max_idle:
            self._close_later(worker)
            return
        loop = asyncio.get_running_loop()
        worker.expiry = loop.call_later(self.idle_seconds, self._expire, worker)
        self._idle.append(worker)

    def _expire(self, worker: _Worker) -> None:
        if worker in self._idle:
            self._idle.remove(worker)
            self._close_later(worker)

    def _close_later(self, worker: _Worker) -> None:
        worker.sock.close()  # the worker exits at end of file
        reaping = asyncio.ensure_future(_reap(worker))
        self._retiring.add(reaping)
        reaping.add_done_callback(self._retiring.discard)

    async def apply(
        self,
        fd: int,
        size: int,
        compression: str,
        target: str,
        *,
        sync_fs: bool = False,
        overlay: OverlayUpper | None = None,
    ) -> tuple[str, int]:
        """Apply the blob open as ``fd`` (``size`` bytes) to ``target``; ``(diff ID, size)``.

        Raises:
            InvalidArgumentError: a hostile or malformed archive (as in a thread).
            OSError: the filesystem refused (errno and file name as in a thread).
            InternalError: the worker died before it answered.
        """
        header = {
            "size": size,
            "compression": compression,
            "target": target,
            "sync_fs": sync_fs,
            "overlay": None
            if overlay is None
            else {"lowers": list(overlay.lowers), "xattr_prefix": overlay.xattr_prefix},
        }
        request = json.dumps(header).encode()
        loop = asyncio.get_running_loop()
        worker = self._take()
        try:
            try:
                socket.send_fds(worker.sock, [request], [fd])
            except OSError:
                # died between its last apply and this one: nothing was applied, start another
                self._busy.discard(worker)
                worker.kill()
                worker = self._spawn()
                self._busy.add(worker)
                socket.send_fds(worker.sock, [request], [fd])
            reply = await loop.sock_recv(worker.sock, _MAX_MESSAGE)
        except BaseException:
            self._busy.discard(worker)
            worker.kill()
            await _reap(worker)
            raise
        if not reply:
            self._busy.discard(worker)
            worker.kill()
            code = await _reap(worker)
            msg = (
                f"layer applier process {worker.proc.pid} {_exit_text(code)} "
                f"while applying to {target}"
            )
            raise errdefs.InternalError(msg)
        self._busy.discard(worker)
        self._park(worker)
        return _result(json.loads(reply))

    async def aclose(self) -> None:
        """Stop every worker (idle ones at once; an applying one is killed) and reap them."""
        self._closed = True
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        for worker in workers:
            if worker.expiry is not None:
                worker.expiry.cancel()
            worker.kill()
        for worker in workers:
            await _reap(worker)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


def _result(reply: dict[str, Any]) -> tuple[str, int]:
    error = reply.get("error")
    if error is None:
        return str(reply["digest"]), int(reply["size"])
    if "errno" in error:
        raise OSError(error["errno"], error["strerror"], error.get("filename"))
    kind = getattr(errdefs, str(error.get("kind")), None)
    if not (isinstance(kind, type) and issubclass(kind, errdefs.ContainerdError)):
        kind = errdefs.InternalError
    raise kind(str(error.get("message", "")))


# --- the worker process ----------------------------------------------------------------


def _apply_request(header: dict[str, Any], fd: int) -> dict[str, Any]:
    from pycontainerd.snapshots import differ
    from pycontainerd.snapshots.apply import OverlayUpper

    raw = header.get("overlay")
    overlay = (
        None
        if raw is None
        else OverlayUpper(lowers=tuple(raw["lowers"]), xattr_prefix=str(raw["xattr_prefix"]))
    )
    try:
        dgst, size = differ._apply_chunks(  # noqa: SLF001 - the same code as the thread path
            differ._fd_chunks(fd, int(header["size"])),  # noqa: SLF001
            str(header["compression"]),
            str(header["target"]),
            bool(header["sync_fs"]),
            overlay,
        )
    except errdefs.ContainerdError as exc:
        return {"error": {"kind": type(exc).__name__, "message": exc.message}}
    except OSError as exc:
        if exc.errno is None:
            return {"error": {"kind": "InternalError", "message": str(exc)}}
        fname = exc.filename if isinstance(exc.filename, str) else None
        return {"error": {"errno": exc.errno, "strerror": exc.strerror, "filename": fname}}
    except Exception as exc:  # noqa: BLE001 - reported to the daemon, which raises it
        return {"error": {"kind": "InternalError", "message": f"layer applier: {exc!r}"}}
    return {"digest": dgst, "size": size}


def _die_with_parent(parent: int) -> None:
    import ctypes
    import ctypes.util

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the daemon died before the line above
        raise SystemExit(1)


def serve(sock: socket.socket) -> None:
    """Answer apply requests on ``sock`` until end of file."""
    while True:
        message, fds, _flags, _addr = socket.recv_fds(sock, _MAX_MESSAGE, 1)
        if not message:
            return
        try:
            if len(fds) != 1:
                reply = {"error": {"kind": "InternalError", "message": "no blob descriptor"}}
            else:
                reply = _apply_request(json.loads(message), fds[0])
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


def main(argv: list[str]) -> int:
    fd, parent = int(argv[0]), int(argv[1])
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C on the daemon's terminal is for it
    with socket.socket(fileno=fd) as sock:
        serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
