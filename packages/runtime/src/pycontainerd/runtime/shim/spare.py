"""A spare shim: a shim server started before it is needed, waiting to be told what to serve.

A new shim costs a Python start-up and the server's imports (asyncio, protobuf,
ttrpc, the task service): a few hundred milliseconds on a loaded machine, paid
by every pod whose pause task needs a shim of its own. The daemon therefore
keeps one spare (:class:`pycontainerd.runtime.spares.Spares`), started with
:func:`start` the way :mod:`.bootstrap` starts a shim (through ``/bin/sh``, so
the daemon is not its parent; ``start_new_session``; the daemon's
``oom_score_adj`` + 1). The spare imports the server and waits on its end of a
``SOCK_SEQPACKET`` socketpair (fd number in ``PYCONTAINERD_SHIM_SPARE_FD``).

Where :mod:`.bootstrap` would spawn a shim, :meth:`Spare.hand` sends the spare
one message instead: the server's command line flags and environment (JSON),
with the bound, listening shim socket and the shim's log file as ``SCM_RIGHTS``
fds. The spare takes them (log on stdout and stderr, environment replaced),
answers with its pid and from then on is the shim a spawn would have started.

A spare exits when its socketpair closes unused: the daemon stopped (it also
kills its spare, through a pidfd) or died.

The daemon's side of this module imports neither asyncio nor protobuf.
"""

from __future__ import annotations

import array
import contextlib
import os
import select
import signal
import socket
import sys

from pycontainerd.core.userns import root_in_initial_namespace
from pycontainerd.runtime.shim.flags import SPARE_FD_ENV

__all__ = ["SPARE_FD_ENV", "Spare", "run", "start"]

SPARE_NICE = 10
"""A spare imports at this nice value (when it may go back), so that the daemon's
foreground work (the shims' ``runc create``) gets the CPU first."""
HAND_TIMEOUT = 5.0
"""How long :meth:`Spare.hand` waits for the spare's answer (it may still be importing)."""
_MAX_MESSAGE = 1 << 20


class Spare:
    """The daemon's handle on one spare shim.

    Attributes:
        pid: the spare's pid.
        used: it was handed a shim's work, or found dead and stopped (either
            way it cannot be handed again).
    """

    def __init__(self, pid: int, channel: socket.socket, pidfd: int) -> None:
        self.pid = pid
        self.channel = channel
        self.used = False
        self._pidfd = pidfd

    def fileno(self) -> int:
        """The daemon's end of the socketpair: readable (EOF) once the spare is gone."""
        return self.channel.fileno()

    def alive(self) -> bool:
        """Whether the spare still waits (its end of the socketpair is open)."""
        if self.used:
            return False
        poller = select.poll()
        poller.register(self.channel.fileno(), select.POLLIN | select.POLLHUP)
        return not poller.poll(0)

    def hand(self, argv: list[str], env: dict[str, str], listener: int, log: int) -> int:
        """Make the spare the shim serving on ``listener`` with ``argv`` and ``env``; its pid.

        Args:
            argv: the server's flags (``-namespace ... -socket ...``).
            env: the server's whole environment.
            listener: the bound, listening shim socket.
            log: the shim's log file (opened for appending).

        Raises:
            OSError: the spare is gone or did not answer in time; it is then
                stopped and must not be used again.
        """
        import json

        if self.used:
            msg = "spare shim already used"
            raise OSError(msg)
        self.used = True
        if self.alive():  # (then ``pid`` is still the spare's)
            # Back to the daemon's priority now: the rest of its imports are urgent.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, self.pid, os.getpriority(os.PRIO_PROCESS, 0))
        try:
            message = json.dumps({"argv": argv, "env": env}).encode()
            fds = array.array("i", [listener, log])
            self.channel.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            self.channel.settimeout(HAND_TIMEOUT)
            answer = self.channel.recv(64)
            if not answer:
                msg = "spare shim exited before taking its work"
                raise OSError(msg)
            pid = int(answer)
        except (OSError, ValueError) as exc:
            self.stop()
            msg = f"spare shim {self.pid}: {exc}"
            raise OSError(msg) from exc
        self.close()
        return pid

    def take_over(
        self, argv: list[str], env: dict[str, str], listener: int, log: str
    ) -> int | None:
        """:meth:`hand` with the log opened here; the pid, or None when it cannot take the work.

        This is the ``spare`` argument of ``bootstrap.start_here``.
        """
        try:
            log_fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            self.stop()
            return None
        try:
            return self.hand(argv, env, listener, log_fd)
        except OSError as exc:
            import logging

            logging.getLogger("pycontainerd.runtime").warning("%s; starting a new shim", exc)
            return None
        finally:
            os.close(log_fd)

    def stop(self) -> None:
        """Kill the spare (if it still runs) and release the handle."""
        self.used = True
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        """Release the daemon's fds (the spare, if still waiting, then exits on its own)."""
        self.channel.close()
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._pidfd)
            self._pidfd = -1


def start(address: str, env: dict[str, str]) -> Spare:
    """Start a spare shim for the daemon at ``address`` (``-address``, so ``ps`` shows whose).

    Raises:
        OSError: it could not be started.
    """
    from pycontainerd.runtime.shim.bootstrap import spawn_detached

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        argv = [sys.executable, "-m", "pycontainerd.runtime.shim", "-address", address]
        env = {**env, SPARE_FD_ENV: str(theirs.fileno())}
        # (its stderr is the daemon's, so a failing import shows in the daemon's log)
        pid = spawn_detached(argv, env, theirs.fileno())
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        # Signals go through the pidfd: never to a process that reused the pid.
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = -1
    return Spare(pid, ours, pidfd)


def _receive(channel: socket.socket) -> tuple[bytes, list[int]]:
    """The daemon's one message and its fds (``b""`` when the daemon went away)."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = channel.recvmsg(
        _MAX_MESSAGE, socket.CMSG_SPACE(2 * fds.itemsize)
    )
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds)


def _preload() -> None:
    """Import what a shim's first Create imports lazily, and find libc (``ldconfig -p``) now."""
    from pycontainerd.core import mount
    from pycontainerd.core import types as _types  # noqa: F401 - _mount_rootfs's import
    from pycontainerd.runtime.shim import bootstrap

    mount._lib()
    bootstrap.libc()


def _background() -> int | None:
    """Lower this process's CPU priority; the nice value to go back to (None: unchanged).

    Only where going back is allowed: root in the initial user namespace
    (``CAP_SYS_NICE`` is checked there).
    """
    if not root_in_initial_namespace():
        return None
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        if base >= SPARE_NICE:
            return None
        os.setpriority(os.PRIO_PROCESS, 0, SPARE_NICE)
    except OSError:
        return None
    return base


def run(fd: int) -> int:
    """The spare's life: import, wait for the daemon's message, then serve as the shim."""
    channel = socket.socket(fileno=fd)
    channel.set_inheritable(False)
    base = _background()
    from pycontainerd.runtime.shim import server
    from pycontainerd.runtime.shim.bootstrap import LISTEN_FD_ENV
    from pycontainerd.runtime.shim.flags import parse_args

    _preload()
    try:
        data, fds = _receive(channel)
    except OSError:
        return 0
    if not data or len(fds) != 2:
        for extra in fds:
            os.close(extra)
        return 0  # the daemon stopped (or sent something this spare cannot use)
    import json

    if base is not None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, base)
    job = json.loads(data)
    listener, log = fds
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.clear()
    os.environ.update(job["env"])
    os.environ[LISTEN_FD_ENV] = str(listener)
    flags = parse_args(list(job["argv"]))
    channel.sendall(str(os.getpid()).encode())
    channel.close()
    return server.serve(flags)
