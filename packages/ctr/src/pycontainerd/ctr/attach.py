"""Running a task in the foreground: what ``ctr run`` and ``ctr tasks start/exec/attach`` share.

:func:`attach_and_wait` copies stdio through the task's FIFOs, puts the local
terminal in raw mode and forwards its size for a TTY, forwards signals to the
task otherwise, and returns the exit status; :func:`start_task` creates a
container's task and runs it that way (or detached).

Importing this module must not import grpc: the client is imported inside
the functions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.ctr.common import UsageError, log

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable, Coroutine, Iterator

    from pycontainerd.client.client import Client
    from pycontainerd.client.tasks import ExitStatus, FifoSet, StdioCopier, Task

#: Signals a foreground ``ctr`` passes on to its task (upstream forwards all it can catch).
FORWARDED_SIGNALS: Final = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGCONT,
)


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[int | None]:
    """Put stdin's terminal in raw mode while the block runs; yields its fd (None: not a tty)."""
    fd = sys.stdin.fileno() if enabled else -1
    if not enabled or not os.isatty(fd):
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def make_copier(fifos: FifoSet) -> StdioCopier:
    """Copy between this process's stdio and ``fifos`` (stdout and stderr start at once)."""
    from pycontainerd.client.tasks import StdioCopier

    sys.stdout.flush()
    sys.stderr.flush()
    copier = StdioCopier(fifos, stdin=sys.stdin.fileno() if fifos.stdin else None)
    copier.start_output()
    return copier


async def attach_and_wait(
    task: Task,
    waiter: asyncio.Future[ExitStatus],
    copier: StdioCopier | None,
    *,
    tty: bool,
    console: int | None,
    start: Callable[[], Awaitable[object]] | None = None,
) -> ExitStatus:
    """Start the process (``start``), feed stdin, forward resizes or signals until it exits.

    Signals are caught before ``start`` runs, so one that arrives as the
    process starts is forwarded to it rather than ending ``ctr``.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    pending: set[asyncio.Future[Any]] = set()

    def spawn(coro: Any) -> None:
        fut = asyncio.ensure_future(coro)
        pending.add(fut)
        fut.add_done_callback(pending.discard)

    async def forward(sig: signal.Signals) -> None:
        try:
            await task.kill(sig)
        except Exception as exc:  # upstream logs and goes on
            log("error", f"forward signal {sig.name}", error=exc)

    async def resize() -> None:
        if console is None:
            return
        try:
            size = os.get_terminal_size(console)
            await task.resize(size.columns, size.lines)
        except Exception as exc:  # upstream logs and goes on
            log("error", "console resize", error=exc)

    def spawn_forward(sig: signal.Signals) -> None:
        spawn(forward(sig))

    installed: list[int] = []
    try:
        if not tty:
            for forwarded in FORWARDED_SIGNALS:
                loop.add_signal_handler(forwarded, spawn_forward, forwarded)
                installed.append(forwarded)
        if start is not None:
            if tty and console is not None and not task.exec_id:
                # The init process's terminal exists once the task is created:
                # size it before the process runs, so it never sees 0x0.
                with contextlib.suppress(Exception):
                    size = os.get_terminal_size(console)
                    await task.resize(size.columns, size.lines)
            await start()
        if copier is not None:
            # Closing the FIFO's only writer at the end of the input is the
            # process's EOF; no CloseIO, which could cut off input still buffered.
            copier.start_stdin()
        if tty and console is not None:
            await resize()
            loop.add_signal_handler(signal.SIGWINCH, lambda: spawn(resize()))
            installed.append(signal.SIGWINCH)
        return await waiter
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for fut in list(pending):
            fut.cancel()


def ensure_future(coro: Coroutine[Any, Any, ExitStatus]) -> asyncio.Future[ExitStatus]:
    """Schedule ``coro`` on the running loop (asyncio is imported only when a command runs)."""
    import asyncio

    return asyncio.ensure_future(coro)


def finish_output(copier: StdioCopier | None) -> None:
    """Let the output threads drain what the process wrote."""
    if copier is not None and not copier.wait_output(5.0):
        copier.unblock()


def write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` to ``path`` atomically (a dot-file renamed into place)."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path))
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_SYNC, 0o666)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


async def start_task(
    client: Client,
    record: Any,
    *,
    tty: bool,
    detach: bool,
    null_io: bool,
    fifo_dir: str,
    pid_file: str = "",
) -> int:
    """Create and start the task of ``record``; unless ``detach``, attach and return its status.

    Returns:
        The exit status (0 when detached).
    """
    from pycontainerd.client.tasks import FifoSet, new_task

    if tty and null_io:
        msg = "tty and null-io cannot be used together"
        raise UsageError(msg)
    fifos = None if null_io else FifoSet.create(record.id, root=fifo_dir, terminal=tty)
    copier = None if detach or fifos is None else make_copier(fifos)
    with raw_terminal(tty and not detach) as console:
        try:
            task = await new_task(client, record, fifos)
        except BaseException:
            if copier is not None:
                copier.unblock()
            if fifos is not None:
                fifos.remove()
            raise
        try:
            waiter = None if detach else ensure_future(task.wait())
            if pid_file:
                write_pid_file(pid_file, task.pid)
            if waiter is None:
                await task.start()
                return 0
            status = await attach_and_wait(
                task, waiter, copier, tty=tty, console=console, start=task.start
            )
            await task.service.delete(task.container_id)
            finish_output(copier)
            return status.code
        except BaseException:
            if not detach:
                with contextlib.suppress(Exception):
                    await task.delete(force=True)
            raise
        finally:
            if not detach and fifos is not None:
                fifos.remove()
