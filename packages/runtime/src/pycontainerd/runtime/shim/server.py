"""Serve mode: the long-running shim process.

``start`` hands this process a bound, listening socket (fd number in
``PYCONTAINERD_SHIM_LISTEN_FD``) and the daemon's state directory. It makes
itself a child subreaper, installs the reaper, serves ``containerd.task.v2.Task``,
``containerd.runtime.sandbox.v1.Sandbox`` (:mod:`.sandbox`) and the
``Bootstrap/Reserve`` call over ttrpc, and forwards events to the
daemon's ttrpc socket (``TTRPC_ADDRESS``, else ``<address>.ttrpc``).

It exits when it serves no task, no sandbox and holds no reservation: after a
``Shutdown`` call, after the last ``Delete`` (each after a short linger,
``PYCONTAINERD_SHIM_LINGER`` seconds, default 2, so a next ``ctr run`` in the
same namespace reuses it), or when a reservation expires unused
(``PYCONTAINERD_SHIM_RESERVATION_TTL``, default 60 s). Exiting
happens under the socket's lock (see :mod:`.bootstrap`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

from pycontainerd.api.ttrpc import CallContext, Server
from pycontainerd.runtime.shim import bootstrap, paths
from pycontainerd.runtime.shim.events import Forwarder
from pycontainerd.runtime.shim.reaper import Reaper
from pycontainerd.runtime.shim.sandbox import SANDBOX_SPEC, SandboxService
from pycontainerd.runtime.shim.service import TASK_SPEC, TaskService

if TYPE_CHECKING:
    from pycontainerd.runtime.shim.flags import Flags

__all__ = ["Lifecycle", "serve"]

log = logging.getLogger("pycontainerd.shim")

PR_SET_CHILD_SUBREAPER = 36
RESERVATION_TTL = 60.0
RESERVATION_TTL_ENV = "PYCONTAINERD_SHIM_RESERVATION_TTL"
LINGER_ENV = "PYCONTAINERD_SHIM_LINGER"
RUNTIME = "io.containerd.pyrunc.v2"


def set_child_subreaper() -> None:
    """Make this process the reaper of its orphaned descendants."""
    if bootstrap.libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


class Lifecycle:
    """When the shim may exit: no task, no live reservation, and the lock held."""

    def __init__(
        self, socket_path: str, *, linger: float, reservation_ttl: float = RESERVATION_TTL
    ) -> None:
        self.socket_path = socket_path
        self.linger = linger
        self.reservation_ttl = reservation_ttl
        self.reservations: dict[str, float] = {}
        self.service: TaskService | None = None
        self.sandbox: SandboxService | None = None
        self.stop = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._socket_ino: int | None = None
        with contextlib.suppress(OSError):
            self._socket_ino = os.stat(socket_path).st_ino

    def reserve(self, task_id: str) -> None:
        """Keep the shim alive for ``task_id`` until it is created (or the reservation expires)."""
        self.reservations[task_id] = time.monotonic() + self.reservation_ttl
        self.schedule(self.reservation_ttl + 0.05)

    def release(self, task_id: str) -> None:
        """``task_id`` was created (or failed): drop its reservation."""
        self.reservations.pop(task_id, None)

    def idle(self) -> bool:
        """No task is served and no reservation is live."""
        now = time.monotonic()
        for task_id, expiry in list(self.reservations.items()):
            if expiry <= now:
                log.info("reservation of %s expired", task_id)
                del self.reservations[task_id]
        return (
            not self.reservations
            and not (self.service and self.service.containers)
            and not (self.sandbox and self.sandbox.sandboxes)
        )

    def schedule(self, delay: float) -> None:
        """Check for idleness after ``delay`` seconds (replacing an earlier check)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self.check)

    def changed(self) -> None:
        """The set of tasks changed: check for idleness after the linger."""
        if self.idle():
            self.schedule(self.linger)

    def shutdown(self, now: bool) -> None:
        """A ``Shutdown`` call: exit at once (``now``) or once idle."""
        if now:
            asyncio.get_running_loop().call_soon(self._exit_locked)
        elif self.idle():
            self.schedule(self.linger)

    def check(self) -> None:
        """Exit if idle and the lock is free; retry shortly if a ``start`` holds it."""
        self._timer = None
        if self.stop.is_set() or not self.idle():
            return
        self._exit_locked(retry=True)

    def _exit_locked(self, *, retry: bool = False) -> None:
        try:
            fd = os.open(self.socket_path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            fd = -1
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if retry:
                        self.schedule(0.05)
                        return
                    fcntl.flock(fd, fcntl.LOCK_EX)
            if retry and not self.idle():
                return
            log.info("shim exiting: no tasks left")
            self._remove_socket()
            self.stop.set()
        finally:
            if fd >= 0:
                os.close(fd)

    def _remove_socket(self) -> None:
        """Unlink our socket (never one a later shim bound at the same path)."""
        with contextlib.suppress(OSError):
            if (
                self._socket_ino is not None
                and os.stat(self.socket_path).st_ino == self._socket_ino
            ):
                os.unlink(self.socket_path)


def _listener(flags: Flags) -> socket.socket:
    fd = os.environ.pop(bootstrap.LISTEN_FD_ENV, "")
    if fd:
        sock = socket.socket(fileno=int(fd))
        sock.set_inheritable(False)
        return sock
    if not flags.socket:
        msg = "serve mode needs -socket or an inherited listener (run by start)"
        raise SystemExit(msg)
    path = flags.socket.removeprefix("unix://")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


async def _serve(flags: Flags) -> None:
    try:
        set_child_subreaper()
    except OSError as exc:
        log.warning("%s", exc)
    sock = _listener(flags)
    socket_path = flags.socket.removeprefix("unix://")
    state = os.environ.pop(bootstrap.STATE_ENV, "") or paths.state_dir(os.getcwd(), flags.address)
    ttrpc_address = os.environ.get("TTRPC_ADDRESS") or (flags.address + ".ttrpc")
    linger = float(os.environ.get(LINGER_ENV, "2"))

    reaper = Reaper()
    reaper.install()
    forwarder = Forwarder(ttrpc_address, flags.namespace)
    forwarder.start()
    ttl = float(os.environ.get(RESERVATION_TTL_ENV, str(RESERVATION_TTL)))
    life = Lifecycle(socket_path, linger=linger, reservation_ttl=ttl)
    service = TaskService(
        namespace=flags.namespace,
        state=state,
        reaper=reaper,
        forwarder=forwarder,
        on_change=life.changed,
        on_shutdown=life.shutdown,
        release=life.release,
    )
    life.service = service
    if flags.id:
        life.reserve(flags.id)

    async def reserve(ctx: CallContext, payload: bytes) -> bytes:
        if life.stop.is_set():
            from pycontainerd.core.errdefs import UnavailableError

            msg = "shim is shutting down"
            raise UnavailableError(msg)
        life.reserve(payload.decode())
        return str(os.getpid()).encode()

    server = Server()
    server.register_service(TASK_SPEC, service)
    life.sandbox = SandboxService(service, on_change=life.changed, release=life.release)
    server.register_service(SANDBOX_SPEC, life.sandbox)
    server.register(bootstrap.BOOTSTRAP_SERVICE, {"Reserve": reserve})
    await server.serve_socket(sock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, life.stop.set)
    log.info("shim serving on %s (namespace %s, pid %d)", socket_path, flags.namespace, os.getpid())
    await life.stop.wait()
    life._remove_socket()
    server.close()
    await forwarder.flush(timeout=5)
    await forwarder.aclose()
    reaper.uninstall()
    with contextlib.suppress(OSError):
        os.unlink(socket_path + ".log")


def serve(flags: Flags) -> int:
    """Run the shim server until it is idle (or told to stop)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if flags.debug else logging.INFO,
        format="time=%(asctime)s level=%(levelname)s msg=%(message)r runtime=" + RUNTIME,
    )
    asyncio.run(_serve(flags))
    return 0
