"""Layer applies in a worker process: the walking differ's extraction, off the daemon's GIL.

A daemon that pulls an image downloads and applies at once. In one process
the two take turns on one GIL: each of the applier's system calls (four per
file) gives the GIL away, and taking it back waits for the downloads' Python.
A worker process applies with a GIL of its own, on another core when one is
free, and the scheduler counts it as a process of its own on a busy machine.

The worker runs the same code as the in-thread path
(``differ._apply_fd``: read, inflate, digest, every check of the archive
reader, extraction); only the process differs. The daemon hands it one
request per layer over a ``SOCK_SEQPACKET`` socket pair: the blob's open file
descriptor (``SCM_RIGHTS``) and a JSON header (size, compression, target
directory, overlay layout, sync), and reads one JSON reply: the diff ID and
size, or the error (its kind and message, or errno and file names).

Lifecycle (:class:`ApplyWorkers`):

- :meth:`~ApplyWorkers.start` (the differ plugin's init) starts one worker
  and returns at once: the worker imports the applier meanwhile, and a
  request sent before it is ready waits in its socket. That worker stays
  ready for the daemon's whole life; applies that overlap it get a worker
  each, which exits after its apply. A worker started ahead of need waits at
  nice :data:`BACKGROUND_NICE` (the daemon's boot comes first) and gets the
  daemon's priority back when a pull starts (:meth:`~ApplyWorkers.expect`)
  or with its first apply; only where it may go back (root in the initial
  user namespace).
- A worker that died while ready is replaced by the next apply. An apply in
  flight when its worker dies fails with :class:`InternalError` naming the
  process and how it ended (the caller does not commit the snapshot).
- An apply that is cancelled (a pull that failed elsewhere) kills its worker
  and reaps it before returning, so nothing writes into the snapshot once the
  caller removes it; a fresh worker is started for the next apply.
- :meth:`~ApplyWorkers.aclose` (daemon stop) closes the ready worker's
  socket (it exits at end of file), kills a busy one, and reaps them. A
  worker ignores SIGINT and SIGTERM (meant for the daemon, whose stop closes
  it) and is killed when the daemon dies (``PR_SET_PDEATHSIG``): that signal
  follows the *thread* that started the worker, so workers are only started
  on the event loop's thread.
- A request too large for one socket message (an overlay with thousands of
  lower directories) is left to the caller, which applies it in a thread; so
  is every apply after a worker exited by itself before answering anything
  (it cannot start here), which is logged.

The worker keeps the memory its applies free (glibc's ``mallopt``: no
``mmap`` per large buffer, no trimming of the heap): otherwise every
megabyte-sized read, inflate and write buffer of every layer is mapped and
unmapped again, about 1 500 page faults per 4.7 MB layer, which made a
worker's apply of such a layer about half as fast again as the same apply
in the daemon's long-lived heap. Its resident size then stays at its
largest apply's (a few MB more than at start).

Importing this module must not import grpc; neither does the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.core import errdefs
from pycontainerd.core.userns import root_in_initial_namespace

if TYPE_CHECKING:
    from pycontainerd.snapshots.apply import OverlayUpper

__all__ = ["ApplyWorkers"]

log = logging.getLogger(__name__)

#: The largest request (bytes): the worker's receive size; the daemon's send buffer is at most this.
_MAX_REQUEST: Final = 1 << 20
_MAX_REPLY: Final = 1 << 16
_PR_SET_PDEATHSIG: Final = 1
# glibc's mallopt parameters and what the worker sets them to
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
#: Allocations below this come from the heap, not a mapping of their own (glibc's maximum).
MMAP_THRESHOLD: Final = 32 << 20
#: Free memory at the top of the heap the worker keeps rather than give back.
TRIM_THRESHOLD: Final = 64 << 20
#: Seconds a closed worker may take to exit before it is killed.
_REAP_SECONDS: Final = 10.0


#: The nice value a ready worker waits at until its first apply (where it may go
#: back): started with the daemon, it imports while the daemon boots, which comes first.
BACKGROUND_NICE: Final = 10


@dataclass(eq=False)
class _Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    served: bool = False
    background: bool = False  # started at a lower priority, until its first apply

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.sock.close()


def _wait(worker: _Worker) -> int:
    try:
        return worker.proc.wait(_REAP_SECONDS)
    except subprocess.TimeoutExpired:
        worker.kill()  # closed but still running: stop it
        return worker.proc.wait()


async def _reap(worker: _Worker) -> int:
    """Wait for ``worker`` to exit; its exit status (negative: the signal that killed it).

    A caller cancelled meanwhile still waits (then raises ``CancelledError``):
    whoever removes what the worker wrote must know it has stopped.
    """
    waiting = asyncio.ensure_future(asyncio.to_thread(_wait, worker))
    cancelled = False
    while not waiting.done():
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            if waiting.cancelled():  # the loop itself is going away
                raise
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return waiting.result()


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


class ApplyWorkers:
    """The walking differ's applier processes: one kept ready, one more per overlapping apply."""

    def __init__(self) -> None:
        self._ready: _Worker | None = None
        self._busy: set[_Worker] = set()
        self._retiring: set[asyncio.Future[int]] = set()
        self._closed = False
        self._broken = False

    @property
    def ready_pid(self) -> int | None:
        """The process ID of the worker waiting for the next apply, if one was started."""
        return None if self._ready is None else self._ready.proc.pid

    def pids(self) -> list[int]:
        """The process IDs of the workers not yet reaped (ready or applying)."""
        workers = [*([self._ready] if self._ready else []), *self._busy]
        return [w.proc.pid for w in workers if w.proc.returncode is None]

    def _spawn(self) -> _Worker:
        # PR_SET_PDEATHSIG fires when the spawning *thread* exits: only the loop's thread spawns
        asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                env=env,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        # the kernel doubles it: a request that fits in the buffer fits in the worker's receive
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _MAX_REQUEST // 2)
        return _Worker(proc, ours)

    def start(self) -> None:
        """Start the ready worker unless there is one; returns without waiting for it.

        Call it on the event loop's thread (never in ``asyncio.to_thread``).
        """
        if not (self._closed or self._broken) and self._ready is None:
            self._ready = self._spawn()
            # it imports while the daemon boots (or works): the daemon's work comes first
            self._ready.background = _to_background(self._ready.proc.pid)

    def _take(self) -> _Worker | None:
        """The ready worker (or a new one); None: apply in a thread (see :meth:`_exited`)."""
        if self._closed:
            msg = "the layer applier is shut down"
            raise errdefs.UnavailableError(msg)
        worker, self._ready = self._ready, None
        if worker is not None and worker.proc.poll() is not None:
            worker.sock.close()  # died while ready (poll reaped it): replace it
            self._exited(worker)
            worker = None
        if self._broken:
            return None
        if worker is None:
            worker = self._spawn()
        self._busy.add(worker)
        self._foreground(worker)
        return worker

    def expect(self) -> None:
        """Applies are coming: the ready worker gets the daemon's priority back now.

        A pull calls it as it starts, so a worker still importing (started
        with the daemon, in the background) is done before the first layer.
        """
        if self._ready is not None:
            self._foreground(self._ready)

    @staticmethod
    def _foreground(worker: _Worker) -> None:
        if worker.background:
            worker.background = False
            _to_foreground(worker.proc.pid)

    def _exited(self, worker: _Worker) -> None:
        """Note how a reaped ``worker`` ended.

        One that exited by itself before it answered anything cannot start
        here (say, the interpreter cannot import the applier): the applies
        after it run in threads.
        """
        code = worker.proc.returncode
        if self._broken or worker.served or code is None or code <= 0:
            return
        self._broken = True
        log.error(
            "layer applier process %d exited with status %d before it applied anything: "
            "applying layers in threads from now on",
            worker.proc.pid,
            code,
        )

    def _release(self, worker: _Worker) -> None:
        self._busy.discard(worker)
        if self._ready is None and not self._closed:
            self._ready = worker
            return
        worker.sock.close()  # an extra worker: it exits at end of file
        self._reap_later(worker)

    def _reap_later(self, worker: _Worker) -> None:
        reaping = asyncio.ensure_future(_reap(worker))
        self._retiring.add(reaping)
        reaping.add_done_callback(self._retiring.discard)

    def _send(self, worker: _Worker, request: bytes, fd: int) -> _Worker | None:
        """Send the request to ``worker`` (or a fresh one if it died); the worker, or None.

        None: the request is larger than a socket message (an overlay with
        thousands of lower directories); ``worker`` is ready again.
        """
        try:
            socket.send_fds(worker.sock, [request], [fd])
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                self._release(worker)
                return None
            # it died since the poll in _take: nothing was applied, start another
            self._busy.discard(worker)
            worker.kill()
            self._reap_later(worker)
            worker = self._spawn()
            self._busy.add(worker)
            try:
                socket.send_fds(worker.sock, [request], [fd])
            except BaseException:
                self._busy.discard(worker)
                worker.kill()
                self._reap_later(worker)
                raise
        return worker

    async def _discard(self, worker: _Worker) -> int:
        """Kill ``worker``, reap it, and have a fresh one ready for the next apply."""
        self._busy.discard(worker)
        worker.kill()
        try:
            code = await _reap(worker)
        finally:
            self._exited(worker)
            self.start()
        return code

    async def apply(
        self,
        fd: int,
        size: int,
        compression: str,
        target: str,
        *,
        sync_fs: bool = False,
        overlay: OverlayUpper | None = None,
    ) -> tuple[str, int] | None:
        """Apply the blob open as ``fd`` (``size`` bytes) to ``target``; ``(diff ID, size)``.

        ``None``: not applied, the caller applies it in a thread of its own
        (no worker can start here, or the request does not fit a message).

        Raises:
            InvalidArgumentError: a hostile or malformed archive (as in a thread).
            OSError: the filesystem refused (errno and file names as in a thread).
            InternalError: the worker died before it answered.
            UnavailableError: :meth:`aclose` was called.
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
        taken = None if self._broken else self._take()
        if taken is None:
            return None
        try:
            sent = self._send(taken, request, fd)
        except BaseException:
            await self._discard(taken)
            raise
        if sent is None:
            return None
        worker = sent
        try:
            try:
                reply = await loop.sock_recv(worker.sock, _MAX_REPLY)
            except ConnectionResetError:  # it died with our request unread
                reply = b""
        except BaseException:
            await self._discard(worker)
            raise
        if not reply:
            code = await self._discard(worker)
            msg = (
                f"layer applier process {worker.proc.pid} {_exit_text(code)} "
                f"while applying to {target}"
            )
            raise errdefs.InternalError(msg)
        worker.served = True
        self._release(worker)
        return _result(json.loads(reply))

    async def aclose(self) -> None:
        """Stop every worker (the ready one at end of file, an applying one killed); reap them."""
        self._closed = True
        ready, self._ready = self._ready, None
        busy = list(self._busy)
        if ready is not None:
            ready.sock.close()
        for worker in busy:
            worker.kill()
        for worker in [*([ready] if ready else []), *busy]:
            await _reap(worker)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)


def _result(reply: dict[str, Any]) -> tuple[str, int]:
    error = reply.get("error")
    if error is None:
        return str(reply["digest"]), int(reply["size"])
    if "errno" in error:
        names = [
            None if name is None else os.fsencode(name) if error["bytes"] else name
            for name in (error["filename"], error["filename2"])
        ]
        raise OSError(error["errno"], error["strerror"], *names)
    raise _error_class(str(error["module"]), str(error["kind"]))(str(error["message"]))


def _error_class(module: str, name: str) -> type[errdefs.ContainerdError]:
    """The worker's error class (a :class:`ContainerdError` of pycontainerd), else InternalError."""
    found = None
    if module.startswith("pycontainerd.") and module in sys.modules:
        found = getattr(sys.modules[module], name, None)
    if isinstance(found, type) and issubclass(found, errdefs.ContainerdError):
        return found
    return errdefs.InternalError


# --- the worker process ----------------------------------------------------------------


def _containerd_error(exc: errdefs.ContainerdError) -> dict[str, Any]:
    kind = type(exc)
    return {"module": kind.__module__, "kind": kind.__qualname__, "message": exc.message}


def _os_error(exc: OSError) -> dict[str, Any]:
    names = (exc.filename, exc.filename2)
    return {
        "errno": exc.errno,
        "strerror": exc.strerror,
        "filename": None if names[0] is None else os.fsdecode(names[0]),
        "filename2": None if names[1] is None else os.fsdecode(names[1]),
        "bytes": isinstance(names[0], bytes),
    }


def _apply_request(header: dict[str, Any], fd: int) -> dict[str, Any]:
    from pycontainerd.snapshots import differ
    from pycontainerd.snapshots.apply import OverlayUpper

    raw = header["overlay"]
    overlay = (
        None
        if raw is None
        else OverlayUpper(lowers=tuple(raw["lowers"]), xattr_prefix=str(raw["xattr_prefix"]))
    )
    try:
        dgst, size = differ._apply_fd(  # the same code as the thread path
            fd,
            int(header["size"]),
            str(header["compression"]),
            str(header["target"]),
            sync_fs=bool(header["sync_fs"]),
            overlay=overlay,
        )
    except errdefs.ContainerdError as exc:
        return {"error": _containerd_error(exc)}
    except OSError as exc:
        if exc.errno is None:
            return {"error": _containerd_error(errdefs.InternalError(f"layer applier: {exc}"))}
        return {"error": _os_error(exc)}
    except Exception as exc:  # reported to the daemon, which raises it
        return {"error": _containerd_error(errdefs.InternalError(f"layer applier: {exc!r}"))}
    return {"digest": dgst, "size": size}


def load_applier() -> None:
    """Import what an apply needs (the worker does it before its first request)."""
    import pycontainerd.snapshots.apply
    import pycontainerd.snapshots.differ  # noqa: F401


def _to_background(pid: int) -> bool:
    """Lower process ``pid``'s CPU priority to :data:`BACKGROUND_NICE`; whether it was.

    Only where it may go back (:func:`_to_foreground`): root in the initial
    user namespace, where ``CAP_SYS_NICE`` counts.
    """
    if not root_in_initial_namespace():
        return False
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) >= BACKGROUND_NICE:
            return False
        os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICE)
    except OSError:
        return False
    return True


def _to_foreground(pid: int) -> None:
    """Give process ``pid`` this process's CPU priority."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, pid, os.getpriority(os.PRIO_PROCESS, 0))


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
        message, fds, flags, _addr = socket.recv_fds(sock, _MAX_REQUEST, 1)
        if not message:
            return
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                cut = errdefs.InternalError("layer applier: request truncated")
                reply = {"error": _containerd_error(cut)}
            elif len(fds) != 1:
                missing = errdefs.InternalError("layer applier: no blob descriptor")
                reply = {"error": _containerd_error(missing)}
            else:
                reply = _apply_request(json.loads(message), fds[0])
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(reply).encode())


def keep_freed_memory() -> bool:
    """Have this process's allocator keep freed memory for the next layer (see module).

    Returns whether it could (glibc); elsewhere nothing changes.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def main(argv: list[str]) -> int:
    """The worker: ``<socket fd> <daemon pid>``."""
    fd, parent = int(argv[0]), int(argv[1])
    _die_with_parent(parent)
    keep_freed_memory()
    # a ^C on the daemon's terminal, or a stop signal to its whole group, is for the daemon:
    # it closes this process when it stops (and its death kills it)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    load_applier()

    with socket.socket(fileno=fd) as sock:
        serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
