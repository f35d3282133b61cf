"""Tasks: the running processes of containers, and their stdio (containerd's ``Task`` and ``cio``).

:class:`TaskService` is the Tasks gRPC service with the client's namespace
header on every call. :class:`FifoSet` creates the named pipes a task's
stdio goes through (``<dir>/<id>-stdin``, ``-stdout``, ``-stderr``; no
stderr with a terminal, as containerd's ``cio`` does) and
:class:`StdioCopier` copies between them and local file descriptors in
threads: the daemon's shim opens its ends when the task is created, a
reader here sees end-of-file once the shim closes the write side after the
process exited.

:func:`new_task` creates a task for a container record from the mounts of
its snapshot (or, with ``rootfs=None`` and no snapshot, the rootfs path in
its spec), :class:`Task` starts, waits for, signals and deletes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import any_pb2

from pycontainerd.api.convert import mount_to_proto, time_from_proto
from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc
from pycontainerd.api.types.task import task_pb2
from pycontainerd.client._errors import rpc_errors
from pycontainerd.client.oci import spec_bytes
from pycontainerd.client.proxies import Proxy
from pycontainerd.core.errdefs import FailedPreconditionError, InvalidArgumentError, NotFoundError
from pycontainerd.core.fdio import open_fifo_writer, retry_delays
from pycontainerd.core.types import UNSET_TIME, AnyValue

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Mapping, Sequence
    from datetime import datetime

    from pycontainerd.client.proxies import Services
    from pycontainerd.core.containers import Container
    from pycontainerd.core.types import Mount

PROCESS_SPEC_TYPE_URL: Final = "types.containerd.io/opencontainers/runtime-spec/1/Process"
DEFAULT_FIFO_DIR: Final = "/run/pycontainerd/fifo"
"""Where FIFOs go when running as root (containerd uses ``/run/containerd/fifo``)."""
_CHUNK: Final = 32 * 1024

#: Signal names ``ctr`` accepts (with or without ``SIG``), as ``signal.Signals`` knows them.
_SIGNALS: Final = {
    s.name.removeprefix("SIG"): int(s) for s in signal.Signals if not s.name.startswith("SIG_")
}


def parse_signal(raw: str) -> int:
    """``SIGKILL``, ``kill`` or ``9`` -> the signal number (moby's ``ParseSignal`` rules).

    Raises:
        InvalidArgumentError: ``invalid signal: <raw>`` for an unknown name or 0.
    """
    number = int(raw) if raw.isdigit() else _SIGNALS.get(raw.upper().removeprefix("SIG"), 0)
    if number <= 0:
        msg = f"invalid signal: {raw}"
        raise InvalidArgumentError(msg)
    return number


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitStatus:
    """How a process ended.

    Attributes:
        code: the exit status (128 + signal for a killed process, as runc reports).
        exited_at: when; :data:`UNSET_TIME` if unknown.
    """

    code: int
    exited_at: datetime = UNSET_TIME


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessState:
    """A task or exec process as the Tasks service reports it.

    Attributes:
        container_id: the container it belongs to.
        id: the process id within the task (the container id for the init process).
        pid: the host pid (0 once deleted or before create finished).
        status: ``CREATED``, ``RUNNING``, ``STOPPED``, ``PAUSED``, ``PAUSING`` or ``UNKNOWN``.
        stdin: the stdin FIFO path ("" when none).
        stdout: the stdout FIFO path.
        stderr: the stderr FIFO path.
        terminal: whether it has a terminal.
        exit_status: valid when stopped.
        exited_at: valid when stopped.
    """

    container_id: str
    id: str
    pid: int
    status: str
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False
    exit_status: int = 0
    exited_at: datetime = UNSET_TIME


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One metrics sample (``Tasks.Metrics``); ``data`` is runtime-specific."""

    id: str
    timestamp: datetime
    data: AnyValue | None


def _process_from_proto(p: task_pb2.Process) -> ProcessState:
    return ProcessState(
        container_id=p.container_id,
        id=p.id,
        pid=p.pid,
        status=task_pb2.Status.Name(p.status),
        stdin=p.stdin,
        stdout=p.stdout,
        stderr=p.stderr,
        terminal=p.terminal,
        exit_status=p.exit_status,
        exited_at=time_from_proto(p.exited_at) if p.HasField("exited_at") else UNSET_TIME,
    )


class TaskService(Proxy["tasks_pb2_grpc.TasksAsyncStub"]):
    """The Tasks service (``containerd.services.tasks.v1.Tasks``) of the client's namespace."""

    new_stub = tasks_pb2_grpc.TasksStub

    async def create(
        self,
        container_id: str,
        *,
        rootfs: Sequence[Mount] = (),
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
        terminal: bool = False,
        options: AnyValue | None = None,
    ) -> int:
        """Create the task of ``container_id``; return its pid."""
        req = tasks_pb2.CreateTaskRequest(
            container_id=container_id,
            rootfs=[mount_to_proto(m) for m in rootfs],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            terminal=terminal,
        )
        if options is not None:
            req.options.CopyFrom(any_pb2.Any(type_url=options.type_url, value=options.value))
        resp = await self._call(self._stub.Create, req)
        return resp.pid

    async def start(self, container_id: str, exec_id: str = "") -> int:
        """Start the init process (or exec ``exec_id``); return its pid."""
        resp = await self._call(
            self._stub.Start, tasks_pb2.StartRequest(container_id=container_id, exec_id=exec_id)
        )
        return resp.pid

    async def delete(self, container_id: str, exec_id: str = "") -> ExitStatus:
        """Delete the task (or only its exec ``exec_id``); return how it ended."""
        with rpc_errors():
            if exec_id:
                resp = await self._stub.DeleteProcess(
                    tasks_pb2.DeleteProcessRequest(container_id=container_id, exec_id=exec_id),
                    **self._opts(),
                )
            else:
                resp = await self._stub.Delete(
                    tasks_pb2.DeleteTaskRequest(container_id=container_id), **self._opts()
                )
        exited = time_from_proto(resp.exited_at) if resp.HasField("exited_at") else UNSET_TIME
        return ExitStatus(code=resp.exit_status, exited_at=exited)

    async def get(self, container_id: str, exec_id: str = "") -> ProcessState:
        """The state of the init process (or exec ``exec_id``)."""
        resp = await self._call(
            self._stub.Get, tasks_pb2.GetRequest(container_id=container_id, exec_id=exec_id)
        )
        return _process_from_proto(resp.process)

    async def list(self, filter: str = "") -> builtins.list[ProcessState]:
        """Every task of the namespace."""
        resp = await self._call(self._stub.List, tasks_pb2.ListTasksRequest(filter=filter))
        return [_process_from_proto(p) for p in resp.tasks]

    async def kill(
        self,
        container_id: str,
        sig: int,
        *,
        exec_id: str = "",
        all: bool = False,
    ) -> None:
        """Send ``sig`` to the init process, exec ``exec_id``, or (``all``) every process."""
        await self._call(
            self._stub.Kill,
            tasks_pb2.KillRequest(container_id=container_id, exec_id=exec_id, signal=sig, all=all),
        )

    async def exec(
        self,
        container_id: str,
        exec_id: str,
        process: Mapping[str, Any],
        *,
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
        terminal: bool = False,
    ) -> None:
        """Add the process ``process`` (an OCI ``Process`` dict) as exec ``exec_id``."""
        spec = any_pb2.Any(type_url=PROCESS_SPEC_TYPE_URL, value=spec_bytes(dict(process)))
        await self._call(
            self._stub.Exec,
            tasks_pb2.ExecProcessRequest(
                container_id=container_id,
                exec_id=exec_id,
                spec=spec,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                terminal=terminal,
            ),
        )

    async def resize_pty(
        self, container_id: str, width: int, height: int, exec_id: str = ""
    ) -> None:
        """Set the terminal size of a process with a terminal."""
        await self._call(
            self._stub.ResizePty,
            tasks_pb2.ResizePtyRequest(
                container_id=container_id, exec_id=exec_id, width=width, height=height
            ),
        )

    async def close_io(self, container_id: str, exec_id: str = "") -> None:
        """Close the process's stdin."""
        await self._call(
            self._stub.CloseIO,
            tasks_pb2.CloseIORequest(container_id=container_id, exec_id=exec_id, stdin=True),
        )

    async def pause(self, container_id: str) -> None:
        """Freeze every process of the task."""
        await self._call(self._stub.Pause, tasks_pb2.PauseTaskRequest(container_id=container_id))

    async def resume(self, container_id: str) -> None:
        """Thaw a paused task."""
        await self._call(self._stub.Resume, tasks_pb2.ResumeTaskRequest(container_id=container_id))

    async def pids(self, container_id: str) -> builtins.list[tuple[int, AnyValue | None]]:
        """Host pids of the task's processes, each with runtime details (``ProcessDetails``)."""
        resp = await self._call(
            self._stub.ListPids, tasks_pb2.ListPidsRequest(container_id=container_id)
        )
        return [
            (
                p.pid,
                AnyValue(type_url=p.info.type_url, value=p.info.value)
                if p.HasField("info")
                else None,
            )
            for p in resp.processes
        ]

    async def metrics(self, *filters: str) -> builtins.list[Metric]:
        """One metrics sample per task matching any of ``filters`` (``id==<container>``)."""
        resp = await self._call(self._stub.Metrics, tasks_pb2.MetricsRequest(filters=list(filters)))
        return [
            Metric(
                id=m.id,
                timestamp=time_from_proto(m.timestamp),
                data=AnyValue(type_url=m.data.type_url, value=m.data.value)
                if m.HasField("data")
                else None,
            )
            for m in resp.metrics
        ]

    async def wait(self, container_id: str, exec_id: str = "") -> ExitStatus:
        """Block until the process exits (no deadline); return how it ended."""
        with rpc_errors():
            resp = await self._stub.Wait(
                tasks_pb2.WaitRequest(container_id=container_id, exec_id=exec_id),
                metadata=self._client.metadata(),
            )
        exited = time_from_proto(resp.exited_at) if resp.HasField("exited_at") else UNSET_TIME
        return ExitStatus(code=resp.exit_status, exited_at=exited)


# -- stdio ---------------------------------------------------------------------


def default_fifo_dir() -> str:
    """``/run/pycontainerd/fifo`` as root, the temporary directory otherwise."""
    return DEFAULT_FIFO_DIR if os.geteuid() == 0 else tempfile.gettempdir()


@dataclass(frozen=True, slots=True, kw_only=True)
class FifoSet:
    """The FIFO paths of one process ("" for a stream it does not have).

    Attributes:
        dir: the directory holding them ("" for paths given by the daemon).
        stdin: the process's stdin.
        stdout: its stdout (with a terminal: the terminal's output).
        stderr: its stderr; "" with a terminal.
        terminal: whether the process has a terminal.
    """

    dir: str = ""
    stdin: str = ""
    stdout: str = ""
    stderr: str = ""
    terminal: bool = False

    @classmethod
    def create(
        cls, process_id: str, *, root: str = "", stdin: bool = True, terminal: bool = False
    ) -> FifoSet:
        """Make FIFOs for ``process_id`` in a new private directory under ``root``."""
        base = root or default_fifo_dir()
        os.makedirs(base, mode=0o700, exist_ok=True)
        directory = tempfile.mkdtemp(dir=base)
        names = {"stdin": stdin, "stdout": True, "stderr": not terminal}
        paths: dict[str, str] = {}
        for stream, wanted in names.items():
            path = os.path.join(directory, f"{process_id}-{stream}") if wanted else ""
            if path:
                os.mkfifo(path, 0o700)
            paths[stream] = path
        return cls(dir=directory, terminal=terminal, **paths)

    @classmethod
    def of(cls, state: ProcessState) -> FifoSet:
        """The FIFOs a running process was created with (``ctr tasks attach``)."""
        return cls(
            stdin=state.stdin, stdout=state.stdout, stderr=state.stderr, terminal=state.terminal
        )

    def remove(self) -> None:
        """Delete the FIFO directory (only one this set created)."""
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class StdioCopier:
    """Copies local file descriptors to and from a :class:`FifoSet`, one thread per stream.

    Readers (stdout, stderr) start at once: their FIFOs are opened without
    blocking in :meth:`start_output` itself and each is polled by a thread,
    which sees data once the shim writes and end-of-file once the shim,
    having opened the write side, closes it (a FIFO no writer ever opened
    reports nothing). :meth:`unblock` stops
    readers that wait for a shim that never came. The stdin writer starts
    with :meth:`start_stdin` (after the process started); closing its end
    when the local input ends is the process's end-of-file.

    Attributes:
        fifos: the FIFOs.
        stdin: local fd to read the process's input from (``None``: no input).
        stdout: local fd for its output.
        stderr: local fd for its error output.
    """

    fifos: FifoSet
    stdin: int | None = None
    stdout: int | None = 1
    stderr: int | None = 2
    _readers: list[threading.Thread] = field(default_factory=list)
    _stop: tuple[int, int] | None = None
    _stdin_stop: threading.Event = field(default_factory=threading.Event)

    def start_output(self) -> None:
        """Open the output FIFOs for reading now, then copy them in threads.

        The opens happen here, before the task or exec is created (as
        containerd's ``cio`` does), never later in the threads: a reader that
        opens after the shim wrote and closed its end finds an empty FIFO with
        no writer, so the output is lost and the reader waits for nothing.
        """
        if self._stop is None:
            self._stop = os.pipe()
        for path, fd in ((self.fifos.stdout, self.stdout), (self.fifos.stderr, self.stderr)):
            if path and fd is not None:
                try:
                    src = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError:
                    continue
                t = threading.Thread(
                    target=self._copy_out, args=(src, fd, self._stop[0]), daemon=True
                )
                t.start()
                self._readers.append(t)

    def start_stdin(self, on_stdin_eof: Callable[[], None] | None = None) -> None:
        """Start copying local input into the process's stdin; ``on_stdin_eof`` runs at its end."""
        if self.fifos.stdin and self.stdin is not None:
            threading.Thread(
                target=self._copy_in, args=(self.fifos.stdin, self.stdin, on_stdin_eof), daemon=True
            ).start()

    def wait_output(self, timeout: float = 5.0) -> bool:
        """Wait until the output streams reached end-of-file; False on timeout."""
        for t in self._readers:
            t.join(timeout)
        done = not any(t.is_alive() for t in self._readers)
        if done and self._stop is not None:
            for end in self._stop:
                os.close(end)
            self._stop = None
        return done

    def stop_stdin(self) -> None:
        """Give up opening the process's stdin (it is deleted, or never opened it)."""
        self._stdin_stop.set()

    def unblock(self) -> None:
        """Stop the readers (the task was never created, or its output never ended)."""
        self._stdin_stop.set()
        if self._stop is not None:
            with contextlib.suppress(OSError):
                os.write(self._stop[1], b"x")

    @staticmethod
    def _copy_out(src: int, fd: int, stop: int) -> None:
        try:
            poller = select.poll()
            poller.register(src, select.POLLIN)
            poller.register(stop, select.POLLIN)
            while True:
                ready = dict(poller.poll())
                if src not in ready:
                    return  # stopped
                try:
                    chunk = os.read(src, _CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    return  # every writer closed: end-of-file
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except OSError:
            return
        finally:
            os.close(src)

    def _copy_in(self, path: str, fd: int, on_eof: Callable[[], None] | None) -> None:
        with contextlib.suppress(OSError):
            dst = self._open_stdin(path)
            if dst is None:
                return  # stopped before the process's stdin was there
            try:
                os.set_blocking(dst, True)
                while chunk := os.read(fd, _CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(dst, view) :]
            finally:
                os.close(dst)
        if on_eof is not None:
            on_eof()

    def _open_stdin(self, path: str) -> int | None:
        """The stdin FIFO's write end, or ``None`` once :meth:`stop_stdin` was called.

        Never a blocking open (it would wait for ever for a reader that is
        gone): a non-blocking one, tried again while the FIFO has no reader.
        """
        delays = retry_delays()
        while (fd := open_fifo_writer(path)) is None:
            if self._stdin_stop.wait(next(delays)):
                return None
        return fd


# -- tasks -----------------------------------------------------------------------


class Task:
    """A container's task (or one exec process of it) bound to a :class:`TaskService`."""

    def __init__(
        self, service: TaskService, container_id: str, pid: int = 0, exec_id: str = ""
    ) -> None:
        self.service = service
        self.container_id = container_id
        self.pid = pid
        self.exec_id = exec_id

    @property
    def id(self) -> str:
        """The process id: the exec id, or the container id for the init process."""
        return self.exec_id or self.container_id

    async def start(self) -> int:
        """Start it; returns (and records) its pid."""
        self.pid = await self.service.start(self.container_id, self.exec_id)
        return self.pid

    async def wait(self) -> ExitStatus:
        """Block until it exits."""
        return await self.service.wait(self.container_id, self.exec_id)

    async def kill(self, sig: int, *, all: bool = False) -> None:
        """Signal it (``all``: every process of the task)."""
        await self.service.kill(self.container_id, sig, exec_id=self.exec_id, all=all)

    async def state(self) -> ProcessState:
        """Its current state."""
        return await self.service.get(self.container_id, self.exec_id)

    async def resize(self, width: int, height: int) -> None:
        """Resize its terminal."""
        await self.service.resize_pty(self.container_id, width, height, self.exec_id)

    async def close_io(self) -> None:
        """Close its stdin."""
        await self.service.close_io(self.container_id, self.exec_id)

    async def delete(self, *, force: bool = False) -> ExitStatus:
        """Delete it; it must have stopped unless ``force`` (SIGKILL and wait first).

        Raises:
            FailedPreconditionError: ``task must be stopped before deletion: running``.
        """
        state = await self.state()
        stopped = state.status in {"STOPPED", "UNKNOWN"} or (
            state.status == "CREATED" and state.pid == 0
        )
        if not stopped:
            if not force:
                msg = f"task must be stopped before deletion: {state.status.lower()}"
                raise FailedPreconditionError(msg)
            waiter = asyncio.ensure_future(self.wait())
            try:
                await self.kill(signal.SIGKILL, all=not self.exec_id)
                await waiter
            except BaseException:
                waiter.cancel()
                raise
        return await self.service.delete(self.container_id, self.exec_id)


async def load_task(client: Services, container_id: str, exec_id: str = "") -> Task:
    """The task of ``container_id`` (or its exec ``exec_id``).

    Raises:
        NotFoundError: ``no running task found: ...`` when it has none.
    """
    service = TaskService(client)
    try:
        state = await service.get(container_id, exec_id)
    except NotFoundError as exc:
        msg = f"no running task found: {exc}"
        raise NotFoundError(msg) from None
    return Task(service, container_id, state.pid, exec_id)


async def new_task(
    client: Services,
    container: Container,
    fifos: FifoSet | None,
    *,
    options: AnyValue | None = None,
) -> Task:
    """Create the task of ``container`` with stdio through ``fifos`` (``None``: no stdio).

    The root filesystem is the mounts of the container's snapshot, when it
    has one; otherwise the spec's ``root.path`` is used by the runtime.
    """
    rootfs: list[Mount] = []
    if container.snapshot_key:
        sn = client.snapshot_service(container.snapshotter or None)
        rootfs = await sn.mounts(container.snapshot_key)
    io = fifos or FifoSet()
    service = TaskService(client)
    pid = await service.create(
        container.id,
        rootfs=rootfs,
        stdin=io.stdin,
        stdout=io.stdout,
        stderr=io.stderr,
        terminal=io.terminal,
        options=options,
    )
    return Task(service, container.id, pid)


async def exec_process(
    client: Services,
    container_id: str,
    exec_id: str,
    process: Mapping[str, Any],
    fifos: FifoSet | None,
) -> Task:
    """Add exec ``exec_id`` running ``process`` to the task of ``container_id`` (not started)."""
    io = fifos or FifoSet()
    service = TaskService(client)
    await service.exec(
        container_id,
        exec_id,
        process,
        stdin=io.stdin,
        stdout=io.stdout,
        stderr=io.stderr,
        terminal=io.terminal,
    )
    return Task(service, container_id, 0, exec_id)
