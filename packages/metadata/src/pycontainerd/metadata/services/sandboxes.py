"""The sandbox Store service (``containerd.services.sandbox.v1.Store``).

Create, Update, Delete, List and Get over :class:`~pycontainerd.metadata.sandboxes.SandboxStore`.
Like upstream's store service it publishes no events (the controller service
publishes ``/sandboxes/*``).

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycontainerd.api.errgrpc import unary_rpc
from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as pb
from pycontainerd.api.services.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from pycontainerd.api.types import sandbox_pb2 as types_pb
from pycontainerd.core.types import AnyValue
from pycontainerd.metadata.sandboxes import Sandbox

if TYPE_CHECKING:
    import grpc
    from google.protobuf import any_pb2

    from pycontainerd.metadata.sandboxes import SandboxStore

_Ctx = Any  # grpc.aio.ServicerContext[request, response]


def _opaque(value: any_pb2.Any, present: bool) -> AnyValue | None:
    return AnyValue(type_url=value.type_url, value=value.value) if present else None


def sandbox_from_proto(msg: types_pb.Sandbox) -> Sandbox:
    """Wire -> record (timestamps are the store's business)."""
    has_runtime = msg.HasField("runtime")
    return Sandbox(
        id=msg.sandbox_id,
        runtime_name=msg.runtime.name,
        runtime_options=_opaque(
            msg.runtime.options, has_runtime and msg.runtime.HasField("options")
        ),
        spec=_opaque(msg.spec, msg.HasField("spec")),
        labels=dict(msg.labels),
        extensions={
            k: AnyValue(type_url=v.type_url, value=v.value) for k, v in msg.extensions.items()
        },
        sandboxer=msg.sandboxer,
    )


def sandbox_to_proto(sb: Sandbox) -> types_pb.Sandbox:
    """Record -> wire, nanosecond timestamps."""
    out = types_pb.Sandbox(sandbox_id=sb.id, sandboxer=sb.sandboxer, labels=dict(sb.labels))
    out.runtime.SetInParent()
    out.runtime.name = sb.runtime_name
    if sb.runtime_options is not None:
        out.runtime.options.type_url = sb.runtime_options.type_url
        out.runtime.options.value = sb.runtime_options.value
    if sb.spec is not None:
        out.spec.type_url = sb.spec.type_url
        out.spec.value = sb.spec.value
    for name, value in sb.extensions.items():
        ext = out.extensions[name]
        ext.type_url = value.type_url
        ext.value = value.value
    out.created_at.FromNanoseconds(sb.created_at_ns)
    out.updated_at.FromNanoseconds(sb.updated_at_ns)
    return out


__all__ = ["SandboxStoreService", "sandbox_from_proto", "sandbox_to_proto"]


class SandboxStoreService(pb_grpc.StoreServicer):
    """Serves sandbox records from a ``SandboxStore``."""

    def __init__(self, store: SandboxStore) -> None:
        self._store = store

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_StoreServicer_to_server(self, server)

    @unary_rpc
    async def Create(self, request: pb.StoreCreateRequest, context: _Ctx) -> pb.StoreCreateResponse:  # noqa: N802
        sb = await self._store.create(sandbox_from_proto(request.sandbox))
        return pb.StoreCreateResponse(sandbox=sandbox_to_proto(sb))

    @unary_rpc
    async def Update(self, request: pb.StoreUpdateRequest, context: _Ctx) -> pb.StoreUpdateResponse:  # noqa: N802
        sb = await self._store.update(sandbox_from_proto(request.sandbox), *request.fields)
        return pb.StoreUpdateResponse(sandbox=sandbox_to_proto(sb))

    @unary_rpc
    async def Delete(self, request: pb.StoreDeleteRequest, context: _Ctx) -> pb.StoreDeleteResponse:  # noqa: N802
        await self._store.delete(request.sandbox_id)
        return pb.StoreDeleteResponse()

    @unary_rpc
    async def List(self, request: pb.StoreListRequest, context: _Ctx) -> pb.StoreListResponse:  # noqa: N802
        found = await self._store.list(*request.filters)
        return pb.StoreListResponse(list=[sandbox_to_proto(sb) for sb in found])

    @unary_rpc
    async def Get(self, request: pb.StoreGetRequest, context: _Ctx) -> pb.StoreGetResponse:  # noqa: N802
        sb = await self._store.get(request.sandbox_id)
        return pb.StoreGetResponse(sandbox=sandbox_to_proto(sb))
