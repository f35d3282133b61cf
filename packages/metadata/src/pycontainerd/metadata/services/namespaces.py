"""The Namespaces service (``containerd.services.namespaces.v1.Namespaces``).

Events ``/namespaces/create|update|delete`` carry the *target* namespace in
their envelope, as containerd 1.7 does. Update of a namespace that does not
exist creates it (containerd does the same; no ``/namespaces/create`` event,
only the update one). Get of one answers NotFound (upstream answers OK with
no labels).

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2

from pycontainerd.api.errgrpc import unary_rpc
from pycontainerd.api.events import namespace_pb2 as events_pb2
from pycontainerd.api.services.namespaces.v1 import namespace_pb2 as pb
from pycontainerd.api.services.namespaces.v1 import namespace_pb2_grpc as pb_grpc
from pycontainerd.metadata.services._common import announce, mask_paths, publish_in

if TYPE_CHECKING:
    import grpc

    from pycontainerd.core.events import Publisher
    from pycontainerd.metadata.namespaces import Namespace, NamespaceStore

_Ctx = Any  # grpc.aio.ServicerContext[request, response]


def namespace_to_proto(ns: Namespace) -> pb.Namespace:
    """Domain -> wire."""
    return pb.Namespace(name=ns.name, labels=dict(ns.labels))


class NamespacesService(pb_grpc.NamespacesServicer):
    """Serves namespaces from a ``NamespaceStore``."""

    def __init__(self, store: NamespaceStore, publisher: Publisher | None = None) -> None:
        self._store = store
        self._publisher = publisher

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_NamespacesServicer_to_server(self, server)

    @unary_rpc
    async def Get(self, request: pb.GetNamespaceRequest, context: _Ctx) -> pb.GetNamespaceResponse:  # noqa: N802
        ns = await self._store.get(request.name)
        return pb.GetNamespaceResponse(namespace=namespace_to_proto(ns))

    @unary_rpc
    async def List(  # noqa: N802
        self, request: pb.ListNamespacesRequest, context: _Ctx
    ) -> pb.ListNamespacesResponse:
        # Upstream ignores ``filter`` here; so do we.
        found = await self._store.list()
        return pb.ListNamespacesResponse(namespaces=[namespace_to_proto(n) for n in found])

    @unary_rpc
    async def Create(  # noqa: N802
        self, request: pb.CreateNamespaceRequest, context: _Ctx
    ) -> pb.CreateNamespaceResponse:
        ns = await self._store.create(request.namespace.name, dict(request.namespace.labels))
        event = events_pb2.NamespaceCreate
        await announce(self._publisher, "/namespaces/create", event, ns, ns.name)
        return pb.CreateNamespaceResponse(namespace=namespace_to_proto(ns))

    @unary_rpc
    async def Update(  # noqa: N802
        self, request: pb.UpdateNamespaceRequest, context: _Ctx
    ) -> pb.UpdateNamespaceResponse:
        target = request.namespace
        ns = await self._store.update(target.name, dict(target.labels), mask_paths(request))
        event = events_pb2.NamespaceUpdate
        await announce(self._publisher, "/namespaces/update", event, ns, ns.name)
        return pb.UpdateNamespaceResponse(namespace=namespace_to_proto(ns))

    @unary_rpc
    async def Delete(self, request: pb.DeleteNamespaceRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        await self._store.delete(request.name)
        await publish_in(
            self._publisher,
            request.name,
            "/namespaces/delete",
            events_pb2.NamespaceDelete(name=request.name),
        )
        return empty_pb2.Empty()
