"""The Leases service (``containerd.services.leases.v1.Leases``).

``Delete`` with ``sync`` waits for a garbage collection
(``MetadataDB.wait_for_gc``); until the GC scheduler is installed that
returns at once. Leases publish no events, as upstream.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2

from pycontainerd.api.convert import lease_to_proto, resource_from_proto, resource_to_proto
from pycontainerd.api.errgrpc import unary_rpc
from pycontainerd.api.services.leases.v1 import leases_pb2 as pb
from pycontainerd.api.services.leases.v1 import leases_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    import grpc

    from pycontainerd.metadata.db import MetadataDB
    from pycontainerd.metadata.leases import LeaseStore

_Ctx = Any  # grpc.aio.ServicerContext[request, response]


class LeasesService(pb_grpc.LeasesServicer):
    """Serves leases from a ``LeaseStore``."""

    def __init__(self, store: LeaseStore, db: MetadataDB) -> None:
        self._store = store
        self._db = db

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_LeasesServicer_to_server(self, server)

    @unary_rpc
    async def Create(self, request: pb.CreateRequest, context: _Ctx) -> pb.CreateResponse:  # noqa: N802
        lease = await self._store.create(request.id, labels=dict(request.labels))
        return pb.CreateResponse(lease=lease_to_proto(lease))

    @unary_rpc
    async def Delete(self, request: pb.DeleteRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        await self._store.delete(request.id, sync=request.sync)
        return empty_pb2.Empty()

    @unary_rpc
    async def List(self, request: pb.ListRequest, context: _Ctx) -> pb.ListResponse:  # noqa: N802
        found = await self._store.list(*request.filters)
        return pb.ListResponse(leases=[lease_to_proto(le) for le in found])

    @unary_rpc
    async def AddResource(self, request: pb.AddResourceRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        await self._store.add_resource(request.id, resource_from_proto(request.resource))
        return empty_pb2.Empty()

    @unary_rpc
    async def DeleteResource(  # noqa: N802
        self, request: pb.DeleteResourceRequest, context: _Ctx
    ) -> empty_pb2.Empty:
        await self._store.delete_resource(request.id, resource_from_proto(request.resource))
        return empty_pb2.Empty()

    @unary_rpc
    async def ListResources(  # noqa: N802
        self, request: pb.ListResourcesRequest, context: _Ctx
    ) -> pb.ListResourcesResponse:
        found = await self._store.list_resources(request.id)
        return pb.ListResourcesResponse(resources=[resource_to_proto(r) for r in found])
