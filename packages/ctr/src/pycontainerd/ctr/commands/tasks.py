"""``ctr tasks``: the running processes of containers (list, ps, exec, kill, pause, metrics...).

Also home of what ``ctr run`` shares with ``tasks start``/``exec``/``attach``:
:func:`attach_and_wait` copies stdio through the task's FIFOs, puts the local
terminal in raw mode and forwards its size for a TTY, forwards signals to the
task otherwise, and returns the exit status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import TYPE_CHECKING, Any, Final, TypeVar

import click

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.ctr.common import CommandError, group, log, run
from pycontainerd.ctr.tabwriter import TabWriter

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable, Coroutine, Iterator
    from datetime import datetime
    from typing import TextIO

    from google.protobuf.message import Message

    from pycontainerd.client.client import Client
    from pycontainerd.client.tasks import ExitStatus, FifoSet, Metric, StdioCopier, Task
    from pycontainerd.core.types import AnyValue

tasks = group("tasks", "Manage tasks")

_M = TypeVar("_M", bound="Message")

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
PROCESS_DETAILS: Final = "containerd.runc.v1.ProcessDetails"


class UsageError(InvalidArgumentError):
    """A mistake on the command line, printed as bare text (upstream's ``errors.New``)."""

    def __str__(self) -> str:
        return self.message


def need_id(value: str | None) -> str:
    """``value``, or upstream's error when the container id is missing."""
    if not value:
        msg = "container id must be provided"
        raise UsageError(msg)
    return value


def exit_with(code: int) -> None:
    """End ``ctr`` with the task's exit status (nothing printed), like ``cli.NewExitError``."""
    if code != 0:
        raise CommandError(code)


# -- the local terminal and the copying ------------------------------------------------------


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


async def load_container_task(client: Client, container_id: str, exec_id: str = "") -> Task:
    """``LoadContainer`` then ``container.Task``: the record must exist, then the task."""
    from pycontainerd.client.tasks import load_task

    await client.container_store().get(container_id)
    return await load_task(client, container_id, exec_id)


# -- commands ---------------------------------------------------------------------------------


@tasks.command_with_aliases("list", "ls")
@click.option("--quiet", "-q", is_flag=True, help="Print only the task id")
@click.pass_context
def list_tasks(ctx: click.Context, quiet: bool) -> None:
    """List tasks."""
    from pycontainerd.client.tasks import TaskService

    found = run(ctx, lambda client: TaskService(client).list())
    if quiet:
        for t in found:
            click.echo(t.id)
        return
    w = TabWriter(sys.stdout, 4, 8, 4, " ")
    w.write("TASK\tPID\tSTATUS\t\n")
    for t in found:
        w.write(f"{t.id}\t{t.pid}\t{t.status}\n")
    w.flush()


def format_process_info(info: AnyValue | None) -> str:
    """The INFO column of ``ctr tasks ps``: the exec id of a runc process, ``-`` without info."""
    if info is None:
        return "-"
    if info.type_url.rpartition("/")[2] == PROCESS_DETAILS:
        from pycontainerd.api.types.runc.options import oci_pb2

        details = _parse(oci_pb2.ProcessDetails, info.value)
        return f"&ProcessDetails{{ExecID:{details.exec_id},XXX_unrecognized:[],}}"
    return info.type_url


@tasks.command("ps")
@click.argument("container", required=False)
@click.pass_context
def ps(ctx: click.Context, container: str | None) -> None:
    """List processes for container."""
    cid = need_id(container)

    async def work(client: Client) -> list[tuple[int, AnyValue | None]]:
        task = await load_container_task(client, cid)
        return await task.service.pids(cid)

    w = TabWriter(sys.stdout, 1, 8, 4, " ")
    w.write("PID\tINFO\n")
    for pid, info in run(ctx, work):
        w.write(f"{pid}\t{format_process_info(info)}\n")
    w.flush()


@tasks.command("pause")
@click.argument("container", required=False)
@click.pass_context
def pause(ctx: click.Context, container: str | None) -> None:
    """Pause an existing container."""

    async def work(client: Client) -> None:
        task = await load_container_task(client, container or "")
        await task.service.pause(task.container_id)

    run(ctx, work)


@tasks.command("resume")
@click.argument("container", required=False)
@click.pass_context
def resume(ctx: click.Context, container: str | None) -> None:
    """Resume a paused container."""

    async def work(client: Client) -> None:
        task = await load_container_task(client, container or "")
        await task.service.resume(task.container_id)

    run(ctx, work)


@tasks.command("kill")
@click.option("--signal", "-s", "sig", default="", help="Signal to send to the container")
@click.option("--exec-id", default="", help="Process ID to kill")
@click.option(
    "--all", "-a", "all_", is_flag=True, help="Send signal to all processes inside the container"
)
@click.argument("container", required=False)
@click.pass_context
def kill(ctx: click.Context, sig: str, exec_id: str, all_: bool, container: str | None) -> None:
    """Signal a container (default: SIGTERM)."""
    from pycontainerd.client.containers import STOP_SIGNAL_LABEL
    from pycontainerd.client.tasks import parse_signal

    cid = need_id(container)
    if all_ and exec_id:
        msg = "specify an exec-id or all; not both"
        raise UsageError(msg)
    try:
        number = parse_signal(sig) if sig else None
    except InvalidArgumentError as exc:
        raise UsageError(exc.message) from None

    async def work(client: Client) -> None:
        record = await client.container_store().get(cid)
        signum = number
        if signum is None:
            signum = parse_signal(record.labels.get(STOP_SIGNAL_LABEL) or "SIGTERM")
        task = await load_container_task(client, cid, exec_id)
        await task.kill(signum, all=all_)

    run(ctx, work)


@tasks.command_with_aliases("delete", "del", "remove", "rm")
@click.option("--force", "-f", is_flag=True, help="Force delete task process")
@click.option("--exec-id", default="", help="Process ID to kill")
@click.argument("containers", nargs=-1)
@click.pass_context
def delete(ctx: click.Context, force: bool, exec_id: str, containers: tuple[str, ...]) -> None:
    """Delete one or more tasks."""

    async def work(client: Client) -> tuple[Exception | None, int]:
        if exec_id:
            task = await load_container_task(client, containers[0] if containers else "", exec_id)
            status = await task.delete(force=force)
            return None, status.code
        first: Exception | None = None
        for target in containers:
            try:
                task = await load_container_task(client, target)
            except Exception as exc:
                log("error", f"failed to load task from {target}", error=exc)
                first = first or exc
                continue
            try:
                status = await task.delete(force=force)
            except Exception as exc:
                log("error", f"unable to delete {target}", error=exc)
                first = first or exc
                continue
            if status.code != 0:
                log("warning", f"task {target} exit with non-zero exit code {status.code}")
        return first, 0

    err, code = run(ctx, work)
    if err is not None:
        raise err
    exit_with(code)


@tasks.command(
    "exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--cwd", default="", help="Working directory of the new process")
@click.option("--tty", "-t", is_flag=True, help="Allocate a TTY for the container")
@click.option(
    "--detach", "-d", is_flag=True, help="Detach from the task after it has started execution"
)
@click.option("--exec-id", default="", help="Exec specific id for the process")
@click.option("--fifo-dir", default="", help="Directory used for storing IO FIFOs")
@click.option("--env", multiple=True, help="Additional environment variables (e.g. FOO=bar)")
@click.option("--user", default="", help="User id or name")
@click.argument("container", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def exec_(  # noqa: PLR0917 - click passes one parameter per flag
    ctx: click.Context,
    cwd: str,
    tty: bool,
    detach: bool,
    exec_id: str,
    fifo_dir: str,
    env: tuple[str, ...],
    user: str,
    container: str | None,
    args: tuple[str, ...],
) -> None:
    """Execute additional processes in an existing container."""
    from pycontainerd.client.containers import container_spec, resolve_user
    from pycontainerd.client.oci import with_env
    from pycontainerd.client.tasks import FifoSet, exec_process

    cid = need_id(container)

    async def work(client: Client) -> int:
        record = await client.container_store().get(cid)
        spec = container_spec(record)
        await load_container_task(client, cid)
        process = dict(spec.get("process") or {})
        process["terminal"] = tty
        process["args"] = list(args)
        if cwd:
            process["cwd"] = cwd
        if env:
            holder = {"process": process}
            with_env(env)(holder)
        if user:
            mounts = []
            if record.snapshot_key:
                mounts = await client.snapshot_service(record.snapshotter or None).mounts(
                    record.snapshot_key
                )
            uid, gid = resolve_user(user, mounts, str((spec.get("root") or {}).get("path", "")))
            process["user"] = {"uid": uid, "gid": gid}
        fifos = FifoSet.create(exec_id or cid, root=fifo_dir, terminal=tty)
        copier = None if detach else make_copier(fifos)
        try:
            task = await exec_process(client, cid, exec_id, process, fifos)
        except BaseException:
            if copier is not None:
                copier.unblock()
            fifos.remove()
            raise
        try:
            waiter = ensure_future(task.wait())
            with raw_terminal(tty and not detach) as console:
                if detach:
                    await task.start()
                    waiter.cancel()
                    return 0
                status = await attach_and_wait(
                    task, waiter, copier, tty=tty, console=console, start=task.start
                )
                finish_output(copier)
            return status.code
        finally:
            if not detach:
                with contextlib.suppress(Exception):
                    await task.service.delete(cid, task.exec_id)
                fifos.remove()

    exit_with(run(ctx, work))


@tasks.command("start")
@click.option("--null-io", is_flag=True, help="Send all IO to /dev/null")
@click.option("--fifo-dir", default="", help="Directory used for storing IO FIFOs")
@click.option("--pid-file", default="", help="File path to write the task's pid")
@click.option(
    "--detach", "-d", is_flag=True, help="Detach from the task after it has started execution"
)
@click.argument("container", required=False)
@click.pass_context
def start(  # noqa: PLR0917 - click passes one parameter per flag
    ctx: click.Context,
    null_io: bool,
    fifo_dir: str,
    pid_file: str,
    detach: bool,
    container: str | None,
) -> None:
    """Start a container that has been created."""
    from pycontainerd.client.containers import container_spec

    cid = need_id(container)

    async def work(client: Client) -> int:
        record = await client.container_store().get(cid)
        tty = bool((container_spec(record).get("process") or {}).get("terminal"))
        return await start_task(
            client,
            record,
            tty=tty,
            detach=detach,
            null_io=null_io,
            fifo_dir=fifo_dir,
            pid_file=pid_file,
        )

    exit_with(run(ctx, work))


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


@tasks.command("attach")
@click.argument("container", required=False)
@click.pass_context
def attach(ctx: click.Context, container: str | None) -> None:
    """Attach to the IO of a running container."""
    from pycontainerd.client.containers import container_spec
    from pycontainerd.client.tasks import FifoSet

    cid = need_id(container)

    async def work(client: Client) -> int:
        record = await client.container_store().get(cid)
        tty = bool((container_spec(record).get("process") or {}).get("terminal"))
        task = await load_container_task(client, cid)
        fifos = FifoSet.of(await task.state())
        with raw_terminal(tty) as console:
            copier = make_copier(fifos)
            waiter = ensure_future(task.wait())
            status = await attach_and_wait(task, waiter, copier, tty=tty, console=console)
            with contextlib.suppress(Exception):
                await task.service.delete(cid)
            finish_output(copier)
        return status.code

    exit_with(run(ctx, work))


# -- metrics ------------------------------------------------------------------------------------

_V1_METRICS: Final = "io.containerd.cgroups.v1.Metrics"
_V2_METRICS: Final = "io.containerd.cgroups.v2.Metrics"
_NOT_CGROUPS: Final = "cannot convert metric data to cgroups.Metrics or windows.Statistics"


def _document(msg: Message) -> dict[str, Any]:
    """A message as ctr's JSON shows it: fields by proto name, unset and zero fields left out."""
    doc: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.type == field.TYPE_MESSAGE:
            if field.is_repeated:
                doc[field.name] = [_document(item) for item in value]
            else:
                doc[field.name] = _document(value)
        elif field.is_repeated:
            doc[field.name] = list(value)
        else:
            doc[field.name] = value
    return doc


def _parse(cls: type[_M], data: bytes) -> _M:
    from google.protobuf.message import DecodeError

    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        msg_text = f"malformed metrics: {e}"
        raise UsageError(msg_text) from e
    return msg


def cgroup_v1_metrics(data: bytes) -> dict[str, Any]:
    """``io.containerd.cgroups.v1.Metrics`` as the nested dict ctr's JSON shows (zeros omitted)."""
    from pycontainerd.api.types.cgroups.v1 import metrics_pb2

    return _document(_parse(metrics_pb2.Metrics, data))


def cgroup_v2_metrics(data: bytes) -> dict[str, Any]:
    """``io.containerd.cgroups.v2.Metrics`` as a nested dict (zeros omitted)."""
    from pycontainerd.api.types.cgroups.v2 import metrics_pb2

    return _document(_parse(metrics_pb2.Metrics, data))


def go_time(ts: datetime) -> str:
    """A timestamp as Go prints a ``time.Time``: ``2006-01-02 15:04:05.999999999 +0000 UTC``."""
    from datetime import UTC

    t = ts.astimezone(UTC)
    frac = f"{t.microsecond * 1000:09d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def write_metrics_table(out: TextIO, metric: Metric) -> None:
    """Write the table ``ctr tasks metrics`` prints for one sample."""
    if metric.data is None:
        raise UsageError(_NOT_CGROUPS)
    kind = metric.data.type_url.rpartition("/")[2]
    w = TabWriter(out, 1, 8, 4, " ")
    w.write("ID\tTIMESTAMP\t\n")
    w.write(f"{metric.id}\t{go_time(metric.timestamp)}\t\n\n")
    w.write("METRIC\tVALUE\t\n")
    if kind == _V1_METRICS:
        from pycontainerd.api.types.cgroups.v1 import metrics_pb2 as v1

        m1 = _parse(v1.Metrics, metric.data.value)
        if m1.HasField("memory"):
            w.write(f"memory.usage_in_bytes\t{m1.memory.usage.usage}\t\n")
            w.write(f"memory.limit_in_bytes\t{m1.memory.usage.limit}\t\n")
            w.write(f"memory.stat.cache\t{m1.memory.total_cache}\t\n")
        if m1.HasField("cpu"):
            per_cpu = " ".join(str(v) for v in m1.cpu.usage.per_cpu)
            w.write(f"cpuacct.usage\t{m1.cpu.usage.total}\t\n")
            w.write(f"cpuacct.usage_percpu\t[{per_cpu}]\t\n")
        if m1.HasField("pids"):
            w.write(f"pids.current\t{m1.pids.current}\t\n")
            w.write(f"pids.limit\t{m1.pids.limit}\t\n")
    elif kind == _V2_METRICS:
        from pycontainerd.api.types.cgroups.v2 import metrics_pb2 as v2

        m2 = _parse(v2.Metrics, metric.data.value)
        if m2.HasField("pids"):
            w.write(f"pids.current\t{m2.pids.current}\t\n")
            w.write(f"pids.limit\t{m2.pids.limit}\t\n")
        if m2.HasField("cpu"):
            for name in (
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_periods",
                "nr_throttled",
                "throttled_usec",
            ):
                w.write(f"cpu.{name}\t{getattr(m2.cpu, name)}\t\n")
        if m2.HasField("memory"):
            for name in ("usage", "usage_limit", "swap_usage", "swap_limit"):
                w.write(f"memory.{name}\t{getattr(m2.memory, name)}\t\n")
    else:
        raise UsageError(_NOT_CGROUPS)
    w.flush()


@tasks.command_with_aliases("metrics", "metric")
@click.option("--format", "fmt", default="table", help='"table" or "json"')
@click.argument("container", required=False)
@click.pass_context
def metrics(ctx: click.Context, fmt: str, container: str | None) -> None:
    """Get a single data point of metrics for a task with the built-in Linux runtime."""
    import json

    cid = container or ""

    async def work(client: Client) -> Metric:
        task = await load_container_task(client, cid)
        found = await task.service.metrics(f"id=={cid}")
        if not found:
            from pycontainerd.core.errdefs import NotFoundError

            msg = f"no metrics received for {cid}"
            raise NotFoundError(msg)
        return found[0]

    metric = run(ctx, work)
    if fmt == "table":
        write_metrics_table(sys.stdout, metric)
    elif fmt == "json":
        if metric.data is None:
            raise UsageError(_NOT_CGROUPS)
        kind = metric.data.type_url.rpartition("/")[2]
        if kind == _V1_METRICS:
            doc = cgroup_v1_metrics(metric.data.value)
        elif kind == _V2_METRICS:
            doc = cgroup_v2_metrics(metric.data.value)
        else:
            raise UsageError(_NOT_CGROUPS)
        click.echo(json.dumps(doc, indent=2))
    else:
        msg = "format must be table or json"
        raise UsageError(msg)
