"""The Tasks service (``containerd.services.tasks.v1.Tasks``) over the task manager.

Tasks are the running side of containers: ``Create`` looks the container up in
the metadata store, takes its spec and runtime, and hands the rootfs mounts
(from the request, else from the container's snapshot) and the stdio paths to
the runtime v2 manager. Every other call goes to the task's shim. Task events
(``/tasks/create``, ``/tasks/start``, ``/tasks/exit``, ``/tasks/delete``, ...)
come from the shims; this service publishes none itself, so none is doubled.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import empty_pb2, timestamp_pb2

from pycontainerd.api.errgrpc import unary_rpc
from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim
from pycontainerd.api.services.tasks.v1 import tasks_pb2 as pb
from pycontainerd.api.services.tasks.v1 import tasks_pb2_grpc as pb_grpc
from pycontainerd.api.types import metrics_pb2, mount_pb2
from pycontainerd.api.types.task import task_pb2 as task_types
from pycontainerd.core import filters, namespaces
from pycontainerd.core.errdefs import InvalidArgumentError, UnimplementedError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    import grpc

    from pycontainerd.core.containers import Container
    from pycontainerd.core.containers import Store as ContainerStore
    from pycontainerd.core.snapshots import Snapshotter
    from pycontainerd.runtime.manager import TaskManager
    from pycontainerd.runtime.shims import ShimTask

__all__ = ["TasksService"]

_Ctx = Any  # grpc.aio.ServicerContext[request, response]
CHECKPOINT_UNSUPPORTED: Final = "checkpoint and restore are not supported by pycontainerd"


def _process(state: shim.StateResponse, container_id: str) -> task_types.Process:
    """A shim ``State`` as the API's ``Process``."""
    return task_types.Process(
        container_id=container_id,
        id=state.exec_id or state.id or container_id,
        pid=state.pid,
        status=state.status,
        stdin=state.stdin,
        stdout=state.stdout,
        stderr=state.stderr,
        terminal=state.terminal,
        exit_status=state.exit_status,
        exited_at=state.exited_at,
    )


def _deleted(process_id: str, resp: shim.DeleteResponse) -> pb.DeleteResponse:
    """The answer to a deletion of ``process_id`` (a task or an exec), from the shim's."""
    return pb.DeleteResponse(
        id=process_id, pid=resp.pid, exit_status=resp.exit_status, exited_at=resp.exited_at
    )


def _checkpoint_unsupported() -> None:
    raise UnimplementedError(CHECKPOINT_UNSUPPORTED)


class TasksService(pb_grpc.TasksServicer):
    """Serves tasks from a :class:`TaskManager`.

    Args:
        manager: the runtime v2 task manager.
        containers: the metadata container store (namespaced by the request).
        snapshotters: namespaced snapshotters by name, for rootfs mounts.
    """

    def __init__(
        self,
        manager: TaskManager,
        containers: ContainerStore,
        snapshotters: Mapping[str, Snapshotter] | Callable[[], Mapping[str, Snapshotter]],
    ) -> None:
        self._manager = manager
        self._containers = containers
        self._snapshotters = snapshotters

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_TasksServicer_to_server(self, server)

    # -- helpers ------------------------------------------------------------

    def _snapshotter(self, name: str) -> Snapshotter:
        found = self._snapshotters() if callable(self._snapshotters) else self._snapshotters
        if name not in found:
            msg = f"snapshotter {name} was not found"
            raise InvalidArgumentError(msg)
        return found[name]

    async def _task(self, container_id: str) -> ShimTask:
        """The task of a container: the container must exist, then its task."""
        if not container_id:
            msg = "container id must not be empty"
            raise InvalidArgumentError(msg)
        await self._containers.get(container_id)
        return self._manager.get(namespaces.namespace_required(), container_id)

    async def _rootfs(self, c: Container, request: pb.CreateTaskRequest) -> list[mount_pb2.Mount]:
        if request.rootfs:
            return list(request.rootfs)
        if not c.snapshot_key:
            return []
        snapshotter = self._snapshotter(c.snapshotter)
        mounts = await snapshotter.mounts(c.snapshot_key)
        return [
            mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))
            for m in mounts
        ]

    # -- RPCs ---------------------------------------------------------------

    @unary_rpc
    async def Create(  # noqa: N802
        self, request: pb.CreateTaskRequest, context: _Ctx
    ) -> pb.CreateTaskResponse:
        ns = namespaces.namespace_required()
        c = await self._containers.get(request.container_id)
        if request.HasField("checkpoint") and request.checkpoint.digest:
            raise UnimplementedError(CHECKPOINT_UNSUPPORTED)
        if c.spec is None or not c.spec.value:
            msg = f"container {c.id} has no OCI spec"
            raise InvalidArgumentError(msg)
        rootfs = await self._rootfs(c, request)
        runtime_options = None
        if c.runtime.options is not None:
            from google.protobuf import any_pb2

            runtime_options = any_pb2.Any(
                type_url=c.runtime.options.type_url, value=c.runtime.options.value
            )
        t = await self._manager.create(
            ns,
            request.container_id,
            spec=c.spec.value,
            runtime=c.runtime.name,
            runtime_path=request.runtime_path,
            runtime_options=runtime_options,
            task_options=request.options if request.HasField("options") else None,
            rootfs=rootfs,
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
            terminal=request.terminal,
            sandbox_id=c.sandbox_id,
        )
        return pb.CreateTaskResponse(container_id=request.container_id, pid=t.pid)

    @unary_rpc
    async def Start(self, request: pb.StartRequest, context: _Ctx) -> pb.StartResponse:  # noqa: N802
        t = await self._task(request.container_id)
        resp: shim.StartResponse = await t.call(
            "Start", shim.StartRequest(id=t.id, exec_id=request.exec_id)
        )
        return pb.StartResponse(pid=resp.pid)

    @unary_rpc
    async def Delete(self, request: pb.DeleteTaskRequest, context: _Ctx) -> pb.DeleteResponse:  # noqa: N802
        t = await self._task(request.container_id)
        return _deleted(request.container_id, await self._manager.delete(t.namespace, t.id))

    @unary_rpc
    async def DeleteProcess(  # noqa: N802
        self, request: pb.DeleteProcessRequest, context: _Ctx
    ) -> pb.DeleteResponse:
        t = await self._task(request.container_id)
        if not request.exec_id:
            msg = "exec id must not be empty"
            raise InvalidArgumentError(msg)
        await t.state(request.exec_id)
        resp: shim.DeleteResponse = await t.call(
            "Delete", shim.DeleteRequest(id=t.id, exec_id=request.exec_id)
        )
        return _deleted(request.exec_id, resp)

    @unary_rpc
    async def Get(self, request: pb.GetRequest, context: _Ctx) -> pb.GetResponse:  # noqa: N802
        t = await self._task(request.container_id)
        state = await t.state(request.exec_id)
        return pb.GetResponse(process=_process(state, t.id))

    @unary_rpc
    async def List(self, request: pb.ListTasksRequest, context: _Ctx) -> pb.ListTasksResponse:  # noqa: N802
        ns = namespaces.namespace_required()
        tasks = self._manager.tasks(ns)
        states = await asyncio.gather(*(t.state() for t in tasks), return_exceptions=True)
        out = pb.ListTasksResponse()
        for t, state in zip(tasks, states, strict=True):
            if isinstance(state, BaseException):
                continue  # deleted or its shim is gone meanwhile: not listed, as upstream
            out.tasks.append(_process(state, t.id))
        return out

    @unary_rpc
    async def Kill(self, request: pb.KillRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        kill = shim.KillRequest(
            id=request.container_id,
            exec_id=request.exec_id,
            signal=request.signal,
            all=request.all,
        )
        return await self._forward(request.container_id, "Kill", kill, exec_id=request.exec_id)

    @unary_rpc
    async def Exec(self, request: pb.ExecProcessRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        if not request.exec_id:
            msg = "exec id cannot be empty"
            raise InvalidArgumentError(msg)
        t = await self._task(request.container_id)
        from pycontainerd.core import identifiers

        try:
            identifiers.validate(request.exec_id)
        except InvalidArgumentError as exc:
            msg = f"invalid exec id {request.exec_id}: {exc.message}"
            raise InvalidArgumentError(msg) from exc
        await t.call(
            "Exec",
            shim.ExecProcessRequest(
                id=t.id,
                exec_id=request.exec_id,
                terminal=request.terminal,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
                spec=request.spec,
            ),
        )
        return empty_pb2.Empty()

    @unary_rpc
    async def ResizePty(self, request: pb.ResizePtyRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        resize = shim.ResizePtyRequest(
            id=request.container_id,
            exec_id=request.exec_id,
            width=request.width,
            height=request.height,
        )
        return await self._forward(request.container_id, "ResizePty", resize)

    @unary_rpc
    async def CloseIO(self, request: pb.CloseIORequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        close = shim.CloseIORequest(
            id=request.container_id, exec_id=request.exec_id, stdin=request.stdin
        )
        return await self._forward(request.container_id, "CloseIO", close)

    @unary_rpc
    async def Pause(self, request: pb.PauseTaskRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        pause = shim.PauseRequest(id=request.container_id)
        return await self._forward(request.container_id, "Pause", pause)

    @unary_rpc
    async def Resume(self, request: pb.ResumeTaskRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        resume = shim.ResumeRequest(id=request.container_id)
        return await self._forward(request.container_id, "Resume", resume)

    async def _forward(
        self, container_id: str, method: str, request: Any, *, exec_id: str = ""
    ) -> empty_pb2.Empty:
        """Call ``method`` of the shim of ``container_id``'s task with ``request``.

        The container and its task must exist, and with ``exec_id`` that process.
        """
        t = await self._process_task(container_id, exec_id)
        await t.call(method, request)
        return empty_pb2.Empty()

    async def _process_task(self, container_id: str, exec_id: str) -> ShimTask:
        """:meth:`_task`, and with ``exec_id`` its exec must exist too."""
        t = await self._task(container_id)
        if exec_id:
            await t.state(exec_id)
        return t

    @unary_rpc
    async def ListPids(self, request: pb.ListPidsRequest, context: _Ctx) -> pb.ListPidsResponse:  # noqa: N802
        t = await self._task(request.container_id)
        resp: shim.PidsResponse = await t.call("Pids", shim.PidsRequest(id=t.id))
        return pb.ListPidsResponse(processes=list(resp.processes))

    @unary_rpc
    async def Checkpoint(  # noqa: N802
        self, request: pb.CheckpointTaskRequest, context: _Ctx
    ) -> pb.CheckpointTaskResponse:
        await self._task(request.container_id)
        _checkpoint_unsupported()
        return pb.CheckpointTaskResponse()

    @unary_rpc
    async def Update(self, request: pb.UpdateTaskRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        update = shim.UpdateTaskRequest(
            id=request.container_id,
            resources=request.resources,
            annotations=dict(request.annotations),
        )
        return await self._forward(request.container_id, "Update", update)

    @unary_rpc
    async def Metrics(self, request: pb.MetricsRequest, context: _Ctx) -> pb.MetricsResponse:  # noqa: N802
        ns = namespaces.namespace_required()
        flt = filters.parse(*request.filters)
        tasks = [
            t
            for t in self._manager.tasks(ns)
            if flt.match(
                filters.adapt({"id": t.id, "namespace": t.namespace, "runtime": t.runtime})
            )
        ]
        stats = await asyncio.gather(
            *(t.call("Stats", shim.StatsRequest(id=t.id)) for t in tasks),
            return_exceptions=True,
        )
        out = pb.MetricsResponse()
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(datetime.now(UTC))
        for t, st in zip(tasks, stats, strict=True):
            if isinstance(st, BaseException):
                continue  # gone meanwhile
            out.metrics.append(metrics_pb2.Metric(timestamp=now, id=t.id, data=st.stats))
        return out

    @unary_rpc
    async def Wait(self, request: pb.WaitRequest, context: _Ctx) -> pb.WaitResponse:  # noqa: N802
        t = await self._process_task(request.container_id, request.exec_id)
        resp = await t.wait(request.exec_id)
        return pb.WaitResponse(exit_status=resp.exit_status, exited_at=resp.exited_at)
