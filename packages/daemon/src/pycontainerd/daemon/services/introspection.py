"""``containerd.services.introspection.v1.Introspection``: plugins and server info."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from pycontainerd.api.errgrpc import to_status_proto, unary_rpc
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.types import platform_pb2
from pycontainerd.core.errdefs import UnknownError

if TYPE_CHECKING:
    from pycontainerd.daemon.introspection import Introspection
    from pycontainerd.daemon.plugins import PluginResult


def _platform(text: str) -> platform_pb2.Platform:
    parts = text.split("/")
    return platform_pb2.Platform(
        os=parts[0] if parts else "",
        architecture=parts[1] if len(parts) > 1 else "",
        variant=parts[2] if len(parts) > 2 else "",
    )


def plugin_to_proto(result: PluginResult) -> introspection_pb2.Plugin:
    """Domain -> wire for one plugin, with ``init_err`` as a ``google.rpc.Status``."""
    reg = result.registration
    plugin = introspection_pb2.Plugin(
        type=str(reg.type),
        id=reg.id,
        requires=[str(t) for t in reg.requires],
        platforms=[_platform(p) for p in result.platforms],
        exports=dict(result.exports),
        capabilities=list(result.capabilities),
    )
    if result.error is not None:
        plugin.init_err.CopyFrom(to_status_proto(result.error))
    return plugin


_Ctx = Any  # grpc.aio.ServicerContext[request, response]


class IntrospectionService(introspection_pb2_grpc.IntrospectionServicer):
    """Thin gRPC adaptor over :class:`~pycontainerd.daemon.introspection.Introspection`."""

    def __init__(self, local: Introspection) -> None:
        self._local = local

    def register(self, server: grpc.aio.Server) -> None:
        introspection_pb2_grpc.add_IntrospectionServicer_to_server(self, server)

    @unary_rpc
    async def Plugins(  # noqa: N802 - name fixed by the proto
        self, request: introspection_pb2.PluginsRequest, context: _Ctx
    ) -> introspection_pb2.PluginsResponse:
        results = self._local.plugins(list(request.filters))
        return introspection_pb2.PluginsResponse(plugins=[plugin_to_proto(r) for r in results])

    @unary_rpc
    async def Server(  # noqa: N802 - name fixed by the proto
        self, request: empty_pb2.Empty, context: _Ctx
    ) -> introspection_pb2.ServerResponse:
        info = self._local.server()
        deprecations = []
        for dep in info.deprecations:
            ts = timestamp_pb2.Timestamp()
            ts.FromNanoseconds(dep.last_occurrence_ns)
            deprecations.append(
                introspection_pb2.DeprecationWarning(
                    id=dep.id, message=dep.message, last_occurrence=ts
                )
            )
        return introspection_pb2.ServerResponse(
            uuid=info.uuid, pid=info.pid, pidns=info.pidns, deprecations=deprecations
        )

    @unary_rpc
    async def PluginInfo(  # noqa: N802 - name fixed by the proto
        self, request: introspection_pb2.PluginInfoRequest, context: _Ctx
    ) -> introspection_pb2.PluginInfoResponse:
        options = None
        if request.HasField("options"):
            options = (request.options.type_url, request.options.value)
        try:
            result, extra = await self._local.plugin_info(request.type, request.id, options)
        except UnknownError as exc:
            # A plain error upstream: its text goes out as is, without ": unknown".
            await context.abort(grpc.StatusCode.UNKNOWN, exc.message)
            raise  # abort raised already
        resp = introspection_pb2.PluginInfoResponse(plugin=plugin_to_proto(result))
        if extra is not None:
            resp.extra.type_url, resp.extra.value = extra
        return resp
