"""The sandbox Controller service (``containerd.services.sandbox.v1.Controller``).

``io.containerd.grpc.v1.sandbox-controllers``: each request names its
sandboxer (the controller plugin id, ``shim`` here); an empty name is
InvalidArgument and an unknown one NotFound, with upstream's texts. Events
``/sandboxes/create``, ``/sandboxes/start`` and ``/sandboxes/exit`` (after
``Wait``) are published as containerd publishes them since the fix of its
topics (2.1 itself sent them without the leading ``/``, which its exchange
refused, failing those calls).

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

from pycontainerd.api.errgrpc import unary_rpc
from pycontainerd.api.events import sandbox_pb2 as events_pb2
from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as pb
from pycontainerd.api.services.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from pycontainerd.core.errdefs import UnknownError
from pycontainerd.core.namespaces import namespace_required

if TYPE_CHECKING:
    from collections.abc import Mapping

    from google.protobuf import timestamp_pb2

    from pycontainerd.core.events import EventBus
    from pycontainerd.runtime.sandbox import ShimController

_Ctx = Any  # grpc.aio.ServicerContext[request, response]

__all__ = ["ControllerService"]


def _set_ts(ts: timestamp_pb2.Timestamp, ns: int) -> None:
    if ns:
        ts.FromNanoseconds(ns)


class ControllerService(pb_grpc.ControllerServicer):
    """Dispatches Controller calls to the sandbox controller named by ``sandboxer``."""

    def __init__(self, controllers: Mapping[str, ShimController], events: EventBus) -> None:
        self._controllers = dict(controllers)
        self._events = events

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ControllerServicer_to_server(self, server)

    async def _controller(self, name: str, context: _Ctx) -> ShimController:
        if not name:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "invalid argument: sandbox controller name can not be empty",
            )
        controller = self._controllers.get(name)
        if controller is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"not found: failed to get sandbox controller by {name}"
            )
        assert controller is not None  # noqa: S101 - abort raised otherwise
        return controller

    @unary_rpc
    async def Create(  # noqa: N802
        self, request: pb.ControllerCreateRequest, context: _Ctx
    ) -> pb.ControllerCreateResponse:
        ctrl = await self._controller(request.sandboxer, context)
        ns = namespace_required()
        sb = request.sandbox
        await ctrl.create(
            ns,
            request.sandbox_id,
            runtime=sb.runtime.name,
            runtime_options=sb.runtime.options if sb.runtime.HasField("options") else None,
            spec=sb.spec.value if sb.HasField("spec") else b"",
            rootfs=request.rootfs,
            options=request.options if request.HasField("options") else None,
            netns_path=request.netns_path,
            annotations=request.annotations,
        )
        await self._events.publish(
            "/sandboxes/create", events_pb2.SandboxCreate(sandbox_id=request.sandbox_id)
        )
        return pb.ControllerCreateResponse(sandbox_id=request.sandbox_id)

    @unary_rpc
    async def Start(  # noqa: N802
        self, request: pb.ControllerStartRequest, context: _Ctx
    ) -> pb.ControllerStartResponse:
        ctrl = await self._controller(request.sandboxer, context)
        try:
            result = await ctrl.start(namespace_required(), request.sandbox_id)
        except UnknownError as exc:
            # A plain error upstream: its text goes out as is, without ": unknown".
            await context.abort(grpc.StatusCode.UNKNOWN, exc.message)
            raise  # abort raised already
        await self._events.publish(
            "/sandboxes/start", events_pb2.SandboxStart(sandbox_id=request.sandbox_id)
        )
        resp = pb.ControllerStartResponse(
            sandbox_id=request.sandbox_id,
            pid=result.pid,
            address=result.address,
            version=result.version,
        )
        _set_ts(resp.created_at, result.created_at_ns)
        return resp

    @unary_rpc
    async def Platform(  # noqa: N802
        self, request: pb.ControllerPlatformRequest, context: _Ctx
    ) -> pb.ControllerPlatformResponse:
        ctrl = await self._controller(request.sandboxer, context)
        platform = await ctrl.platform(namespace_required(), request.sandbox_id)
        return pb.ControllerPlatformResponse(platform=platform)

    @unary_rpc
    async def Stop(  # noqa: N802
        self, request: pb.ControllerStopRequest, context: _Ctx
    ) -> pb.ControllerStopResponse:
        ctrl = await self._controller(request.sandboxer, context)
        await ctrl.stop(namespace_required(), request.sandbox_id, request.timeout_secs)
        return pb.ControllerStopResponse()

    @unary_rpc
    async def Wait(  # noqa: N802
        self, request: pb.ControllerWaitRequest, context: _Ctx
    ) -> pb.ControllerWaitResponse:
        ctrl = await self._controller(request.sandboxer, context)
        exit_ = await ctrl.wait(namespace_required(), request.sandbox_id)
        event = events_pb2.SandboxExit(sandbox_id=request.sandbox_id, exit_status=exit_.exit_status)
        _set_ts(event.exited_at, exit_.exited_at_ns)
        await self._events.publish("/sandboxes/exit", event)
        resp = pb.ControllerWaitResponse(exit_status=exit_.exit_status)
        _set_ts(resp.exited_at, exit_.exited_at_ns)
        return resp

    @unary_rpc
    async def Status(  # noqa: N802
        self, request: pb.ControllerStatusRequest, context: _Ctx
    ) -> pb.ControllerStatusResponse:
        ctrl = await self._controller(request.sandboxer, context)
        st = await ctrl.status(namespace_required(), request.sandbox_id, verbose=request.verbose)
        resp = pb.ControllerStatusResponse(
            sandbox_id=st.sandbox_id,
            pid=st.pid,
            state=st.state,
            info=dict(st.info),
            address=st.address,
            version=st.version,
        )
        _set_ts(resp.created_at, st.created_at_ns)
        _set_ts(resp.exited_at, st.exited_at_ns)
        if st.extra is not None:
            resp.extra.CopyFrom(st.extra)
        return resp

    @unary_rpc
    async def Shutdown(  # noqa: N802
        self, request: pb.ControllerShutdownRequest, context: _Ctx
    ) -> pb.ControllerShutdownResponse:
        ctrl = await self._controller(request.sandboxer, context)
        await ctrl.shutdown(namespace_required(), request.sandbox_id)
        return pb.ControllerShutdownResponse()

    @unary_rpc
    async def Metrics(  # noqa: N802
        self, request: pb.ControllerMetricsRequest, context: _Ctx
    ) -> pb.ControllerMetricsResponse:
        ctrl = await self._controller(request.sandboxer, context)
        metrics = await ctrl.metrics(namespace_required(), request.sandbox_id)
        return pb.ControllerMetricsResponse(metrics=metrics)

    async def Update(  # noqa: N802
        self, request: pb.ControllerUpdateRequest, context: _Ctx
    ) -> pb.ControllerUpdateResponse:
        # As containerd 2.x: the sandbox is required (its plain error, so
        # Unknown), and the shim controller accepts the update and changes
        # nothing (the store's Update changes the record). A sandbox without a
        # runtime is refused here; 2.1 dereferences it and crashes.
        await self._controller(request.sandboxer, context)
        if not request.HasField("sandbox"):
            await context.abort(grpc.StatusCode.UNKNOWN, "sandbox can not be nil")
        if not request.sandbox.HasField("runtime"):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "invalid argument: sandbox runtime can not be nil"
            )
        return pb.ControllerUpdateResponse()
