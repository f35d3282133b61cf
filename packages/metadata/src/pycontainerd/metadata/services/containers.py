"""The Containers service (``containerd.services.containers.v1.Containers``).

Events: ``/containers/create``, ``/containers/update``, ``/containers/delete``.
``ListStream`` sends one message per container.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2

from pycontainerd.api.convert import any_to_proto, container_from_proto, container_to_proto
from pycontainerd.api.errgrpc import aborting_on_error
from pycontainerd.api.events import container_pb2 as events_pb2
from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.core.namespaces import namespace
from pycontainerd.metadata.services._common import mask_paths, publish_in, request_scope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc

    from pycontainerd.core.containers import Container
    from pycontainerd.metadata.containers import ContainerStore
    from pycontainerd.metadata.services._common import Publisher

_Ctx = Any  # grpc.aio.ServicerContext[request, response]


class ContainersService(pb_grpc.ContainersServicer):
    """Serves containers from a ``ContainerStore``."""

    def __init__(self, store: ContainerStore, publisher: Publisher | None = None) -> None:
        self._store = store
        self._publisher = publisher

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ContainersServicer_to_server(self, server)

    async def Get(self, request: pb.GetContainerRequest, context: _Ctx) -> pb.GetContainerResponse:  # noqa: N802
        with request_scope(context):
            async with aborting_on_error(context):
                c = await self._store.get(request.id)
        return pb.GetContainerResponse(container=container_to_proto(c))

    async def List(  # noqa: N802
        self, request: pb.ListContainersRequest, context: _Ctx
    ) -> pb.ListContainersResponse:
        with request_scope(context):
            async with aborting_on_error(context):
                found = await self._store.list(*request.filters)
        return pb.ListContainersResponse(containers=[container_to_proto(c) for c in found])

    async def ListStream(  # noqa: N802
        self, request: pb.ListContainersRequest, context: _Ctx
    ) -> AsyncIterator[pb.ListContainerMessage]:
        with request_scope(context):
            found: list[Container] = []
            async with aborting_on_error(context):
                found = await self._store.list(*request.filters)
        for c in found:
            yield pb.ListContainerMessage(container=container_to_proto(c))

    async def Create(  # noqa: N802
        self, request: pb.CreateContainerRequest, context: _Ctx
    ) -> pb.CreateContainerResponse:
        with request_scope(context):
            async with aborting_on_error(context):
                c = await self._store.create(container_from_proto(request.container))
                await publish_in(
                    self._publisher,
                    namespace(),
                    "/containers/create",
                    events_pb2.ContainerCreate(
                        id=c.id,
                        image=c.image,
                        runtime=events_pb2.ContainerCreate.Runtime(
                            name=c.runtime.name,
                            options=None
                            if c.runtime.options is None
                            else any_to_proto(c.runtime.options),
                        ),
                    ),
                )
        return pb.CreateContainerResponse(container=container_to_proto(c))

    async def Update(  # noqa: N802
        self, request: pb.UpdateContainerRequest, context: _Ctx
    ) -> pb.UpdateContainerResponse:
        with request_scope(context):
            async with aborting_on_error(context):
                c = await self._store.update(
                    container_from_proto(request.container), *mask_paths(request)
                )
                await publish_in(
                    self._publisher,
                    namespace(),
                    "/containers/update",
                    events_pb2.ContainerUpdate(
                        id=c.id, image=c.image, labels=dict(c.labels), snapshot_key=c.snapshot_key
                    ),
                )
        return pb.UpdateContainerResponse(container=container_to_proto(c))

    async def Delete(self, request: pb.DeleteContainerRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        with request_scope(context):
            async with aborting_on_error(context):
                await self._store.delete(request.id)
                await publish_in(
                    self._publisher,
                    namespace(),
                    "/containers/delete",
                    events_pb2.ContainerDelete(id=request.id),
                )
        return empty_pb2.Empty()
