"""Collecting child exits without losing one, and spawning children the reaper knows.

The shim is a child subreaper: container processes (children of runc, which
exits) are re-parented to it, so their exits arrive as SIGCHLD like those of
the runc invocations themselves. One reaper owns ``waitpid``: on every SIGCHLD
it collects *all* exited children with ``waitpid(-1, WNOHANG)`` and hands each
status to whoever watches that pid. Exits nobody watches yet are kept: a
container's init can exit before the shim has read runc's pid file, and an
exec can exit before ``runc exec`` does.

Children are started with :func:`spawn` (``posix_spawn``), never with
``subprocess`` or asyncio's subprocess support: those wait for their own
children and would steal statuses from the reaper. :func:`spawn` runs on the
event-loop thread and the reaper only runs as a loop callback, so a pid is
registered before its exit can possibly be collected.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Exit", "Reaper", "exit_status", "spawn"]

log = logging.getLogger(__name__)

_UNCLAIMED_TTL = 300.0


@dataclass(frozen=True, slots=True)
class Exit:
    """One collected child exit.

    Attributes:
        pid: the child.
        status: containerd's exit status: the exit code, or 128 + signal.
        at: Unix time the exit was collected.
    """

    pid: int
    status: int
    at: float


def exit_status(wait_status: int) -> int:
    """Containerd's exit status for a raw ``waitpid`` status."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    if os.WIFEXITED(wait_status):
        return os.WEXITSTATUS(wait_status)
    return 255


class Reaper:
    """Collects every child exit of this process and dispatches it by pid."""

    def __init__(self) -> None:
        self._watchers: dict[int, asyncio.Future[Exit]] = {}
        self._unclaimed: dict[int, Exit] = {}
        self._subscribers: list[Callable[[Exit], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Handle SIGCHLD on ``loop`` (the running loop by default) and reap once."""
        self._loop = loop or asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGCHLD, self.reap)
        self.reap()

    def uninstall(self) -> None:
        """Stop handling SIGCHLD."""
        if self._loop is not None:
            self._loop.remove_signal_handler(signal.SIGCHLD)
            self._loop = None

    def subscribe(self, callback: Callable[[Exit], None]) -> None:
        """Call ``callback`` for every exit of a pid nobody watches."""
        self._subscribers.append(callback)

    def watch(self, pid: int) -> asyncio.Future[Exit]:
        """A future for the exit of ``pid``; done at once if it already exited."""
        loop = self._loop or asyncio.get_running_loop()
        fut = self._watchers.get(pid)
        if fut is not None:
            return fut
        fut = loop.create_future()
        done = self._unclaimed.pop(pid, None)
        if done is not None:
            fut.set_result(done)
        else:
            self._watchers[pid] = fut
        return fut

    def unwatch(self, pid: int) -> None:
        """Forget a watch (the pid's exit then goes to the subscribers)."""
        self._watchers.pop(pid, None)

    def take(self, pid: int) -> Exit | None:
        """The exit of ``pid`` if it was collected without a watcher (and forget it)."""
        return self._unclaimed.pop(pid, None)

    def reap(self) -> None:
        """Collect all exited children now (the SIGCHLD callback)."""
        now = time.time()
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self._dispatch(Exit(pid, exit_status(status), now))
        if self._unclaimed:
            stale = [p for p, e in self._unclaimed.items() if now - e.at > _UNCLAIMED_TTL]
            for pid in stale:
                del self._unclaimed[pid]

    def _dispatch(self, ex: Exit) -> None:
        fut = self._watchers.pop(ex.pid, None)
        if fut is not None:
            if not fut.done():
                fut.set_result(ex)
            return
        self._unclaimed[ex.pid] = ex
        for callback in self._subscribers:
            try:
                callback(ex)
            except Exception:
                log.exception("exit subscriber failed for pid %d", ex.pid)


def spawn(
    reaper: Reaper,
    argv: Sequence[str],
    *,
    stdin: int | None = None,
    stdout: int | None = None,
    stderr: int | None = None,
    env: dict[str, str] | None = None,
) -> tuple[int, asyncio.Future[Exit]]:
    """Start ``argv`` (looked up on PATH) and watch it; returns its pid and exit future.

    ``stdin``/``stdout``/``stderr`` are fds to install as the child's 0/1/2
    (``/dev/null`` when None). Signals this interpreter ignores (SIGPIPE,
    SIGXFSZ) are reset to their defaults in the child.
    """
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        actions: list[tuple[int, int, int]] = []
        for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
            actions.append((os.POSIX_SPAWN_DUP2, null if fd is None else fd, target))
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            os.environ if env is None else env,
            file_actions=actions,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    finally:
        os.close(null)
    return pid, reaper.watch(pid)
