"""``containerd.task.v2.Task`` over runc: the tasks one shim serves.

One shim may serve several tasks of one namespace (see :mod:`.bootstrap`), so
every call names its task by ``id``; exec processes are named by ``exec_id``.
Processes are created and started with runc; their exits come from the
:class:`~pycontainerd.runtime.shim.reaper.Reaper`, and each exit is reported
exactly once: as ``/tasks/exit`` to the daemon and to every ``Wait``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import socket
import struct
import tempfile
import termios
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import any_pb2, empty_pb2, timestamp_pb2

from pycontainerd.api.events import task_pb2 as events
from pycontainerd.api.runtime.task.v2 import shim_pb2 as pb
from pycontainerd.api.ttrpc import ServiceSpec
from pycontainerd.api.types.task import task_pb2 as task_types
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
    UnknownError,
)
from pycontainerd.runtime.shim import bootstrap, cgroups, paths
from pycontainerd.runtime.shim.runc import Runc, RuncOptions, kill_error
from pycontainerd.runtime.shim.stdio import ProcessIO

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from pycontainerd.api.ttrpc import CallContext
    from pycontainerd.runtime.shim.events import Forwarder
    from pycontainerd.runtime.shim.reaper import Exit, Reaper

__all__ = ["TASK_SPEC", "TaskService"]

log = logging.getLogger(__name__)

_E = empty_pb2.Empty
TASK_SPEC = ServiceSpec(
    "containerd.task.v2.Task",
    {
        "State": (pb.StateRequest, pb.StateResponse),
        "Create": (pb.CreateTaskRequest, pb.CreateTaskResponse),
        "Start": (pb.StartRequest, pb.StartResponse),
        "Delete": (pb.DeleteRequest, pb.DeleteResponse),
        "Pids": (pb.PidsRequest, pb.PidsResponse),
        "Pause": (pb.PauseRequest, _E),
        "Resume": (pb.ResumeRequest, _E),
        "Checkpoint": (pb.CheckpointTaskRequest, _E),
        "Kill": (pb.KillRequest, _E),
        "Exec": (pb.ExecProcessRequest, _E),
        "ResizePty": (pb.ResizePtyRequest, _E),
        "CloseIO": (pb.CloseIORequest, _E),
        "Update": (pb.UpdateTaskRequest, _E),
        "Wait": (pb.WaitRequest, pb.WaitResponse),
        "Stats": (pb.StatsRequest, pb.StatsResponse),
        "Connect": (pb.ConnectRequest, pb.ConnectResponse),
        "Shutdown": (pb.ShutdownRequest, _E),
    },
)
"""The shim task service (17 methods, as upstream)."""

PROCESS_DETAILS = "containerd.runc.v1.ProcessDetails"
VERSION = "pyrunc-v2"
CREATED, RUNNING, STOPPED, PAUSED = (
    task_types.CREATED,
    task_types.RUNNING,
    task_types.STOPPED,
    task_types.PAUSED,
)


def _check_new(key: str, taken: Collection[str], empty: str, exists: str) -> None:
    """A new container's or exec's id: not empty (``empty``) and not ``taken`` (``exists``).

    Raises:
        InvalidArgumentError: the id is empty.
        AlreadyExistsError: it is taken.
    """
    if not key:
        raise InvalidArgumentError(empty)
    if key in taken:
        raise AlreadyExistsError(exists)


def _ts(at: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.seconds = int(at)
    ts.nanos = int((at - int(at)) * 1e9)
    return ts


@dataclass(eq=False)
class Process:
    """The init process (``exec_id`` empty) or an exec process of a container."""

    container: Container
    exec_id: str
    io: ProcessIO
    spec: bytes = b""
    pid: int = 0
    status: int = CREATED
    exit_status: int = 0
    exited_at: float | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    starting: asyncio.Future[None] | None = None

    @property
    def id(self) -> str:
        """The process id as events name it (the container id for init)."""
        return self.exec_id or self.container.id

    def state(self) -> pb.StateResponse:
        """This process as a ``StateResponse``."""
        resp = pb.StateResponse(
            id=self.container.id,
            bundle=self.container.bundle,
            pid=self.pid,
            status=self.status,  # type: ignore[arg-type]
            stdin=self.io.stdin_path,
            stdout=self.io.stdout_path,
            stderr=self.io.stderr_path,
            terminal=self.io.terminal,
            exit_status=self.exit_status,
            exec_id=self.exec_id,
        )
        if self.exited_at is not None:
            resp.exited_at.CopyFrom(_ts(self.exited_at))
        return resp


@dataclass(eq=False)
class Container:
    """A task: runc container, its bundle and its processes."""

    id: str
    bundle: str
    runc: Runc
    cgroup_path: str
    options: RuncOptions = field(default_factory=lambda: RuncOptions(""))
    rootfs_mounted: bool = False
    init: Process | None = None
    execs: dict[str, Process] = field(default_factory=dict)
    oom: cgroups.OomWatcher | None = None
    creating: asyncio.Task[None] | None = None

    def process(self, exec_id: str) -> Process:
        """The process named ``exec_id`` (init when empty).

        Raises:
            NotFoundError: no such exec process.
        """
        if not exec_id:
            assert self.init is not None  # noqa: S101 - set at Create
            return self.init
        proc = self.execs.get(exec_id)
        if proc is None:
            msg = f"process {exec_id} does not exist"
            raise NotFoundError(msg)
        return proc


class TaskService:
    """Serves the Task API for the tasks of one namespace."""

    def __init__(
        self,
        *,
        namespace: str,
        state: str,
        reaper: Reaper,
        forwarder: Forwarder,
        on_change: Callable[[], None] = lambda: None,
        on_shutdown: Callable[[bool], None] = lambda now: None,
        release: Callable[[str], None] = lambda task_id: None,
    ) -> None:
        self.namespace = namespace
        self.state = state
        self.reaper = reaper
        self.events = forwarder
        self.containers: dict[str, Container] = {}
        self._on_change = on_change
        self._on_shutdown = on_shutdown
        self._release = release
        self._tasks: set[asyncio.Task[None]] = set()

    # -- helpers -----------------------------------------------------------

    def _container(self, task_id: str) -> Container:
        c = self.containers.get(task_id)
        if c is None:
            msg = f"container {task_id} not found"
            raise NotFoundError(msg)
        return c

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _monitor(self, proc: Process, fut: asyncio.Future[Exit]) -> None:
        ex = await fut
        if proc.starting is not None:
            # A fast process can exit before ``runc start`` returns: /tasks/start first.
            await asyncio.shield(proc.starting)
        proc.status = STOPPED
        proc.exit_status = ex.status
        proc.exited_at = ex.at
        # Let the output reach the client before the exit does.
        await proc.io.wait_output(timeout=1.0)
        # The OOM eventfd can fire after the victim is reaped (seen for a
        # container's init): check the kill counter so /tasks/oom precedes /tasks/exit.
        self._check_oom(proc.container)
        self.events.publish(
            "/tasks/exit",
            events.TaskExit(
                container_id=proc.container.id,
                id=proc.id,
                pid=proc.pid,
                exit_status=ex.status,
                exited_at=_ts(ex.at),
            ),
        )
        proc.exited.set()

    def _watch_oom(self, c: Container) -> None:
        if cgroups.is_unified() or not c.cgroup_path:
            return
        try:
            c.oom = cgroups.OomWatcher(c.cgroup_path)
        except OSError as exc:
            log.debug("no OOM notification for %s: %s", c.id, exc)
            return

        asyncio.get_running_loop().add_reader(c.oom.fd, self._check_oom, c)

    def _check_oom(self, c: Container) -> None:
        if c.oom is not None and c.oom.fired():
            self.events.publish("/tasks/oom", events.TaskOOM(container_id=c.id))

    @staticmethod
    async def _console(listener: socket.socket) -> int:
        """Receive the pty master runc sends to the console socket."""
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        async with asyncio.timeout(10):
            conn, _ = await loop.sock_accept(listener)
        with conn:
            conn.setblocking(True)
            conn.settimeout(10)
            fds = array_fds(conn)
        if not fds:
            msg = "runc sent no console fd"
            raise FailedPreconditionError(msg)
        for extra in fds[1:]:
            os.close(extra)
        return fds[0]

    async def _run_oci(self, c: Container, io: ProcessIO, args: list[str], op: str) -> None:
        """``runc create``/``exec`` (container id last); failures as upstream words them."""
        try:
            await self._run_with_console(c, io, args, len(args) - 1)
        except ContainerdError as exc:
            raise _oci_failed(exc, op) from exc

    async def _run_with_console(
        self, c: Container, io: ProcessIO, args: list[str], console_args_at: int
    ) -> None:
        """Run runc ``args``; for a terminal, with a console socket whose master goes to ``io``."""
        if not io.terminal:
            await c.runc.run(*args, stdio=io.child_fds())
            io.started()
            return
        tmp = tempfile.mkdtemp(prefix="pty", dir="/tmp")
        path = os.path.join(tmp, "pty.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            args = [*args[:console_args_at], "--console-socket", path, *args[console_args_at:]]
            await c.runc.run(*args, stdio=(None, None, None))
            master = await self._console(listener)
            io.attach_console(master)
        finally:
            listener.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(tmp)

    def _runc_options(self, req: pb.CreateTaskRequest, bundle: str) -> RuncOptions:
        """The runc options of the request (runc's defaults without any).

        What runc calls need is saved in the bundle's ``options.json`` for ``delete``.
        """
        opts = RuncOptions.parse(
            req.options if req.HasField("options") else None,
            paths.runc_root(self.state, self.namespace),
        )
        os.makedirs(opts.root, mode=0o711, exist_ok=True)
        with open(os.path.join(bundle, bootstrap.OPTIONS_FILE), "w") as f:
            json.dump(
                {
                    "root": opts.root,
                    "binary_name": opts.binary_name,
                    "systemd_cgroup": opts.systemd_cgroup,
                },
                f,
            )
        return opts

    async def _create(self, c: Container, req: pb.CreateTaskRequest) -> None:
        """Mount the rootfs and ``runc create`` the container; undo both on failure."""
        assert c.init is not None  # noqa: S101 - set by Create
        io = c.init.io
        try:
            rootfs = os.path.join(c.bundle, "rootfs")
            if req.rootfs:
                await asyncio.to_thread(_mount_rootfs, list(req.rootfs), rootfs)
                c.rootfs_mounted = True
            pid_file = os.path.join(c.bundle, "init.pid")
            args = ["create", "--bundle", c.bundle, "--pid-file", pid_file]
            args += [*c.options.create_flags(), req.id]
            await self._run_oci(c, io, args, "create")
            c.init.pid = _read_pid(pid_file)
            if c.options.systemd_cgroup:
                # ``cgroupsPath`` names a systemd unit then: metrics need the path.
                c.cgroup_path = cgroups.pid_path(c.init.pid) or c.cgroup_path
        except BaseException:
            await self._forget(c)
            raise

    async def _forget(self, c: Container) -> None:
        """Drop a container whose Create failed or was abandoned (idempotent)."""
        if self.containers.get(c.id) is c:
            del self.containers[c.id]
        if c.init is not None:
            c.init.io.close()
        if c.rootfs_mounted:
            c.rootfs_mounted = False
            await asyncio.to_thread(_unmount, os.path.join(c.bundle, "rootfs"))
        self._on_change()

    async def _abandon(self, c: Container, work: asyncio.Task[None]) -> None:
        """Undo a Create whose caller went away: let it finish, then delete the container.

        Without this, a created container nobody knows of would keep its rootfs
        mounted and the shim alive for ever.
        """
        with contextlib.suppress(BaseException):
            await work
        if work.cancelled() or work.exception() is not None:
            return  # ``_create`` undid itself
        if self.containers.get(c.id) is not c:
            return  # deleted meanwhile (Delete waits for the Create)
        log.warning("create of %s abandoned by its caller: deleting it", c.id)
        assert c.init is not None  # noqa: S101
        if c.init.pid:
            self.reaper.watch(c.init.pid)  # its exit is nobody's event
        with contextlib.suppress(ContainerdError):
            await c.runc.run("delete", "--force", c.id)
        await self._forget(c)

    # -- the API -----------------------------------------------------------

    async def Create(self, ctx: CallContext, req: pb.CreateTaskRequest) -> pb.CreateTaskResponse:  # noqa: N802
        """Create the container with ``runc create`` (not started)."""
        _check_new(req.id, self.containers, "task id must not be empty", f"container {req.id}")
        if req.checkpoint:
            msg = "restoring from a checkpoint is not supported by the pyrunc shim"
            raise UnimplementedError(msg)
        bundle = req.bundle
        cgroup_path = _cgroups_path(req.id, bundle)
        opts = self._runc_options(req, bundle)
        c = Container(
            id=req.id,
            bundle=bundle,
            runc=Runc(
                self.reaper,
                opts.root,
                opts.binary_name,
                os.path.join(bundle, "log.json"),
                systemd_cgroup=opts.systemd_cgroup,
            ),
            cgroup_path=cgroup_path,
            options=opts,
        )
        io = ProcessIO(
            req.stdin, req.stdout, req.stderr, terminal=req.terminal, owner=opts.io_owner()
        )
        c.init = Process(c, "", io)
        self.containers[req.id] = c
        self._release(req.id)
        # The mount and ``runc create`` run in their own task: a caller that
        # goes away (its timeout, the daemon's connection closed) must not
        # leave them half done. They finish, then are undone.
        work = asyncio.get_running_loop().create_task(self._create(c, req))
        c.creating = work
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            self._spawn_task(self._abandon(c, work))
            raise
        self._spawn_task(self._monitor(c.init, self.reaper.watch(c.init.pid)))
        self._watch_oom(c)
        self.events.publish(
            "/tasks/create",
            events.TaskCreate(
                container_id=req.id,
                bundle=bundle,
                rootfs=req.rootfs,
                io=events.TaskIO(
                    stdin=req.stdin, stdout=req.stdout, stderr=req.stderr, terminal=req.terminal
                ),
                checkpoint=req.checkpoint,
                pid=c.init.pid,
            ),
        )
        return pb.CreateTaskResponse(pid=c.init.pid)

    async def Start(self, ctx: CallContext, req: pb.StartRequest) -> pb.StartResponse:  # noqa: N802
        """Start the init process (``runc start``) or an exec (``runc exec``)."""
        c = self._container(req.id)
        proc = c.process(req.exec_id)
        if proc.status != CREATED or proc.exited.is_set():
            state = task_types.Status.Name(proc.status)  # type: ignore[arg-type]
            msg = f"process {proc.id} cannot be started in state {state}"
            raise FailedPreconditionError(msg)
        if proc is c.init:
            proc.starting = asyncio.get_running_loop().create_future()
            try:
                try:
                    await c.runc.run("start", c.id)
                except ContainerdError as exc:
                    raise _oci_failed(exc, "start") from exc
                if proc.exited_at is None:
                    proc.status = RUNNING
                self.events.publish(
                    "/tasks/start", events.TaskStart(container_id=c.id, pid=proc.pid)
                )
            finally:
                proc.starting.set_result(None)
            return pb.StartResponse(pid=proc.pid)
        fd, spec_path = tempfile.mkstemp(prefix=".exec-", suffix=".json", dir=c.bundle)
        _write_fd(fd, proc.spec)
        pid_file = os.path.join(c.bundle, f".{proc.exec_id}.pid")
        try:
            args = ["exec", "--process", spec_path, "--detach", "--pid-file", pid_file, c.id]
            await self._run_oci(c, proc.io, args, "exec")
            proc.pid = _read_pid(pid_file)
        except BaseException:
            proc.status = STOPPED
            proc.io.close()
            raise
        finally:
            for path in (spec_path, pid_file):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if proc.exited_at is None:
            proc.status = RUNNING
        self._spawn_task(self._monitor(proc, self.reaper.watch(proc.pid)))
        self.events.publish(
            "/tasks/exec-started",
            events.TaskExecStarted(container_id=c.id, exec_id=proc.exec_id, pid=proc.pid),
        )
        return pb.StartResponse(pid=proc.pid)

    async def Delete(self, ctx: CallContext, req: pb.DeleteRequest) -> pb.DeleteResponse:  # noqa: N802
        """Delete an exited process; deleting init removes the container.

        A Create still in progress is waited for first (the daemon deletes a
        task whose Create it gave up on); if it failed, the task is gone.
        """
        c = self._container(req.id)
        if c.creating is not None and not c.creating.done():
            log.info("delete of %s waits for its create", c.id)
            # ``wait`` neither raises the Create's error nor cancels it; this
            # call's own cancellation (its timeout, a closed connection) still
            # ends it here, before it deletes anything.
            await asyncio.wait({c.creating})
            c = self._container(req.id)
        proc = c.process(req.exec_id)
        if proc.status in {RUNNING, PAUSED} and not proc.exited.is_set():
            msg = f"cannot delete running process {proc.id}"
            raise FailedPreconditionError(msg)
        at = proc.exited_at or time.time()
        resp = pb.DeleteResponse(pid=proc.pid, exit_status=proc.exit_status, exited_at=_ts(at))
        if proc is not c.init:
            proc.io.close()
            del c.execs[proc.exec_id]
            return resp
        with contextlib.suppress(NotFoundError):
            await c.runc.run("delete", "--force", c.id)
        for p in (*c.execs.values(), proc):
            p.io.close()
        if c.oom is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(c.oom.fd)
            c.oom.close()
        if c.rootfs_mounted:
            c.rootfs_mounted = False
            await asyncio.to_thread(_unmount, os.path.join(c.bundle, "rootfs"))
        if self.containers.get(c.id) is c:
            del self.containers[c.id]
        self.events.publish(
            "/tasks/delete",
            events.TaskDelete(
                container_id=c.id, pid=proc.pid, exit_status=proc.exit_status, exited_at=_ts(at)
            ),
        )
        self._on_change()
        return resp

    async def Exec(self, ctx: CallContext, req: pb.ExecProcessRequest) -> empty_pb2.Empty:  # noqa: N802
        """Add an exec process (started by ``Start`` with its exec id)."""
        c = self._container(req.id)
        _check_new(req.exec_id, c.execs, "exec id must not be empty", f"id {req.exec_id}")
        if c.init is None or c.init.exited.is_set():
            msg = f"container {c.id} is not running"
            raise FailedPreconditionError(msg)
        try:
            process = json.loads(req.spec.value or b"null")
        except ValueError as exc:
            msg = f"exec {req.exec_id}: process spec is not JSON: {exc}"
            raise InvalidArgumentError(msg) from exc
        if not isinstance(process, dict) or not process.get("args"):
            msg = f"exec {req.exec_id}: process spec needs args"
            raise InvalidArgumentError(msg)
        # The request decides, as upstream's shim: Go clients send the
        # container's process spec unchanged (no terminal) with terminal=true.
        process["terminal"] = req.terminal
        io = ProcessIO(
            req.stdin, req.stdout, req.stderr, terminal=req.terminal, owner=c.options.io_owner()
        )
        spec = json.dumps(process).encode()
        c.execs[req.exec_id] = Process(c, req.exec_id, io, spec=spec)
        self.events.publish(
            "/tasks/exec-added", events.TaskExecAdded(container_id=c.id, exec_id=req.exec_id)
        )
        return empty_pb2.Empty()

    async def Kill(self, ctx: CallContext, req: pb.KillRequest) -> empty_pb2.Empty:  # noqa: N802
        """Signal a process; ``all`` signals every process of the container."""
        c = self._container(req.id)
        proc = c.process(req.exec_id)
        if proc is c.init:
            # Always runc, as upstream: what runc answers for a stopped or
            # vanished container (deleted behind our back) is NotFound.
            args = ["kill", *(["--all"] if req.all else []), c.id, str(req.signal)]
            try:
                await c.runc.run(*args)
            except ContainerdError as exc:
                raise kill_error(exc) from exc
            return empty_pb2.Empty()
        if proc.pid == 0:
            msg = f"process {proc.id} not created"
            raise FailedPreconditionError(msg)
        if proc.exited.is_set():
            msg = f"process {proc.id} already finished"
            raise NotFoundError(msg)
        try:
            os.kill(proc.pid, req.signal)
        except ProcessLookupError as exc:
            msg = f"exec kill error: process {proc.id} already finished"
            raise NotFoundError(msg) from exc
        return empty_pb2.Empty()

    async def Pids(self, ctx: CallContext, req: pb.PidsRequest) -> pb.PidsResponse:  # noqa: N802
        """The container's processes (``runc ps``), exec ids attached."""
        c = self._container(req.id)
        by_pid = {p.pid: p.exec_id for p in c.execs.values() if p.pid}
        resp = pb.PidsResponse()
        for pid in await c.runc.ps(c.id):
            info = resp.processes.add(pid=pid)
            exec_id = by_pid.get(pid)
            if exec_id:
                from pycontainerd.api.types.runc.options import oci_pb2

                info.info.CopyFrom(
                    any_pb2.Any(
                        type_url=PROCESS_DETAILS,
                        value=oci_pb2.ProcessDetails(exec_id=exec_id).SerializeToString(),
                    )
                )
        return resp

    async def Pause(self, ctx: CallContext, req: pb.PauseRequest) -> empty_pb2.Empty:  # noqa: N802
        """Freeze the container (``runc pause``)."""
        c = self._container(req.id)
        await c.runc.run("pause", c.id)
        assert c.init is not None  # noqa: S101
        c.init.status = PAUSED
        self.events.publish("/tasks/paused", events.TaskPaused(container_id=c.id))
        return empty_pb2.Empty()

    async def Resume(self, ctx: CallContext, req: pb.ResumeRequest) -> empty_pb2.Empty:  # noqa: N802
        """Thaw the container (``runc resume``)."""
        c = self._container(req.id)
        await c.runc.run("resume", c.id)
        assert c.init is not None  # noqa: S101
        if not c.init.exited.is_set():
            c.init.status = RUNNING
        self.events.publish("/tasks/resumed", events.TaskResumed(container_id=c.id))
        return empty_pb2.Empty()

    async def Checkpoint(self, ctx: CallContext, req: pb.CheckpointTaskRequest) -> empty_pb2.Empty:  # noqa: N802
        """Not supported: this shim has no CRIU integration."""
        msg = "checkpoint is not supported by the pyrunc shim (no CRIU integration)"
        raise UnimplementedError(msg)

    async def State(self, ctx: CallContext, req: pb.StateRequest) -> pb.StateResponse:  # noqa: N802
        """The state of a process."""
        return self._container(req.id).process(req.exec_id).state()

    async def Wait(self, ctx: CallContext, req: pb.WaitRequest) -> pb.WaitResponse:  # noqa: N802
        """Wait until the process exits; its exit status and time."""
        proc = self._container(req.id).process(req.exec_id)
        await proc.exited.wait()
        assert proc.exited_at is not None  # noqa: S101
        return pb.WaitResponse(exit_status=proc.exit_status, exited_at=_ts(proc.exited_at))

    async def Stats(self, ctx: CallContext, req: pb.StatsRequest) -> pb.StatsResponse:  # noqa: N802
        """Cgroup metrics of the container (v1 or v2 ``Metrics``)."""
        c = self._container(req.id)
        if not c.cgroup_path:
            msg = f"container {c.id} has no cgroups path"
            raise FailedPreconditionError(msg)
        try:
            type_url, data = cgroups.metrics(c.cgroup_path)
        except FileNotFoundError as exc:
            raise NotFoundError(str(exc)) from exc
        return pb.StatsResponse(stats=any_pb2.Any(type_url=type_url, value=data))

    async def Update(self, ctx: CallContext, req: pb.UpdateTaskRequest) -> empty_pb2.Empty:  # noqa: N802
        """Change the container's resources (``runc update``, OCI LinuxResources JSON)."""
        c = self._container(req.id)
        try:
            json.loads(req.resources.value or b"{}")
        except ValueError as exc:
            msg = f"resources of {c.id} are not JSON: {exc}"
            raise InvalidArgumentError(msg) from exc
        fd, path = tempfile.mkstemp(prefix=".resources-", suffix=".json", dir=c.bundle)
        try:
            _write_fd(fd, req.resources.value or b"{}")
            await c.runc.run("update", "--resources", path, c.id)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return empty_pb2.Empty()

    async def ResizePty(self, ctx: CallContext, req: pb.ResizePtyRequest) -> empty_pb2.Empty:  # noqa: N802
        """Set the window size of a process's terminal (none: nothing to do, as upstream)."""
        proc = self._container(req.id).process(req.exec_id)
        if proc.io.console is None:
            return empty_pb2.Empty()
        fcntl.ioctl(
            proc.io.console, termios.TIOCSWINSZ, struct.pack("HHHH", req.height, req.width, 0, 0)
        )
        return empty_pb2.Empty()

    async def CloseIO(self, ctx: CallContext, req: pb.CloseIORequest) -> empty_pb2.Empty:  # noqa: N802
        """Close a process's stdin."""
        proc = self._container(req.id).process(req.exec_id)
        if req.stdin:
            proc.io.close_stdin()
        return empty_pb2.Empty()

    async def Connect(self, ctx: CallContext, req: pb.ConnectRequest) -> pb.ConnectResponse:  # noqa: N802
        """The shim's pid and the task's pid."""
        c = self.containers.get(req.id)
        task_pid = c.init.pid if c is not None and c.init is not None else 0
        return pb.ConnectResponse(shim_pid=os.getpid(), task_pid=task_pid, version=VERSION)

    async def Shutdown(self, ctx: CallContext, req: pb.ShutdownRequest) -> empty_pb2.Empty:  # noqa: N802
        """Exit the shim once it serves no task (at once with ``now``)."""
        self._on_shutdown(req.now)
        return empty_pb2.Empty()


def array_fds(conn: socket.socket) -> list[int]:
    """Receive fds sent with SCM_RIGHTS on ``conn``."""
    fds: list[int] = []
    _, ancdata, _, _ = conn.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(struct.unpack(f"{usable // 4}i", data[:usable]))
    return fds


def _cgroups_path(task_id: str, bundle: str) -> str:
    """``linux.cgroupsPath`` of the bundle's spec.

    Raises:
        InvalidArgumentError: ``config.json`` is missing or not JSON.
    """
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            spec = json.load(f)
    except (OSError, ValueError) as exc:
        msg = f"cannot read the OCI spec of {task_id}: {exc}"
        raise InvalidArgumentError(msg) from exc
    linux = spec.get("linux") if isinstance(spec, dict) else None
    return str(linux.get("cgroupsPath", "")) if isinstance(linux, dict) else ""


def _oci_failed(exc: ContainerdError, op: str) -> UnknownError:
    """``OCI runtime <op> failed: <runc's reason>``: upstream's wording and kind (Unknown)."""
    return UnknownError(f"OCI runtime {op} failed: {exc.message}")


def _read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _write_fd(fd: int, data: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _mount_rootfs(mounts: list[Any], target: str) -> None:
    from pycontainerd.core.mount import mount_all
    from pycontainerd.core.types import Mount

    os.makedirs(target, mode=0o711, exist_ok=True)
    mount_all(
        [
            Mount(type=m.type, source=m.source, target=m.target, options=tuple(m.options))
            for m in mounts
        ],
        target,
    )


def _unmount(target: str) -> None:
    bootstrap._unmount(target)
