"""``ctr tasks``: the running processes of containers (list, ps, exec, kill, pause, metrics...).

The commands only: running a task in the foreground (stdio, terminal,
signals) is :mod:`pycontainerd.ctr.attach`, shared with ``ctr run``; the
metrics table and JSON are :mod:`pycontainerd.ctr.metrics`.
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Final

import click

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.ctr.attach import (
    attach_and_wait,
    ensure_future,
    finish_output,
    make_copier,
    raw_terminal,
    start_task,
)
from pycontainerd.ctr.common import (
    UsageError,
    exit_with,
    group,
    list_command,
    log,
    print_list,
    print_table,
    run,
)
from pycontainerd.ctr.metrics import metrics_document, parse_message, write_metrics_table

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pycontainerd.client.client import Client
    from pycontainerd.client.tasks import Metric, Task, TaskService
    from pycontainerd.core.types import AnyValue

tasks = group("tasks", "Manage tasks")

PROCESS_DETAILS: Final = "containerd.runc.v1.ProcessDetails"


def need_id(value: str | None) -> str:
    """``value``, or upstream's error when the container id is missing."""
    if not value:
        msg = "container id must be provided"
        raise UsageError(msg)
    return value


async def load_container_task(client: Client, container_id: str, exec_id: str = "") -> Task:
    """``LoadContainer`` then ``container.Task``: the record must exist, then the task."""
    from pycontainerd.client.tasks import load_task

    await client.container_store().get(container_id)
    return await load_task(client, container_id, exec_id)


# -- commands ---------------------------------------------------------------------------------


@list_command(tasks, "Print only the task id", filters=False)
def list_tasks(ctx: click.Context, quiet: bool) -> None:
    """List tasks."""
    from pycontainerd.client.tasks import TaskService

    print_list(
        run(ctx, lambda client: TaskService(client).list()),
        quiet,
        lambda t: t.id,
        "TASK\tPID\tSTATUS\t\n",
        lambda t: f"{t.id}\t{t.pid}\t{t.status}\n",
        minwidth=4,
        padding=4,
    )


def format_process_info(info: AnyValue | None) -> str:
    """The INFO column of ``ctr tasks ps``: the exec id of a runc process, ``-`` without info."""
    if info is None:
        return "-"
    if info.type_url.rpartition("/")[2] == PROCESS_DETAILS:
        from pycontainerd.api.types.runc.options import oci_pb2

        details = parse_message(oci_pb2.ProcessDetails, info.value)
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

    rows = (f"{pid}\t{format_process_info(info)}\n" for pid, info in run(ctx, work))
    print_table("PID\tINFO\n", rows, padding=4)


def _freeze_command(
    name: str, help_text: str, call: Callable[[TaskService, str], Awaitable[object]]
) -> None:
    """Add ``tasks pause`` or ``tasks resume``: ``call(service, container id)``."""

    @tasks.command(name, help=help_text)
    @click.argument("container", required=False)
    @click.pass_context
    def freeze(ctx: click.Context, container: str | None) -> None:
        async def work(client: Client) -> None:
            task = await load_container_task(client, container or "")
            await call(task.service, task.container_id)

        run(ctx, work)


_freeze_command("pause", "Pause an existing container.", lambda s, cid: s.pause(cid))
_freeze_command("resume", "Resume a paused container.", lambda s, cid: s.resume(cid))


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
        click.echo(json.dumps(metrics_document(metric), indent=2))
    else:
        msg = "format must be table or json"
        raise UsageError(msg)
