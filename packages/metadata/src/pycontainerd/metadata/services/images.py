"""The Images service (``containerd.services.images.v1.Images``).

Events: ``/images/create``, ``/images/update``, ``/images/delete`` with type
URLs ``containerd.services.images.v1.ImageCreate`` etc. ``Delete`` with
``sync`` waits for a garbage collection (``MetadataDB.wait_for_gc``); until
the GC scheduler is installed that returns at once.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2

from pycontainerd.api.convert import image_from_proto, image_to_proto
from pycontainerd.api.errgrpc import unary_rpc
from pycontainerd.api.events import image_pb2 as events_pb2
from pycontainerd.api.services.images.v1 import images_pb2 as pb
from pycontainerd.api.services.images.v1 import images_pb2_grpc as pb_grpc
from pycontainerd.core.namespaces import namespace
from pycontainerd.metadata.services._common import announce, mask_paths, publish_in

if TYPE_CHECKING:
    import grpc

    from pycontainerd.core.events import Publisher
    from pycontainerd.metadata.db import MetadataDB
    from pycontainerd.metadata.images import ImageStore

_Ctx = Any  # grpc.aio.ServicerContext[request, response]


class ImagesService(pb_grpc.ImagesServicer):
    """Serves images from an ``ImageStore``."""

    def __init__(
        self, store: ImageStore, db: MetadataDB, publisher: Publisher | None = None
    ) -> None:
        self._store = store
        self._db = db
        self._publisher = publisher

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ImagesServicer_to_server(self, server)

    @unary_rpc
    async def Get(self, request: pb.GetImageRequest, context: _Ctx) -> pb.GetImageResponse:  # noqa: N802
        image = await self._store.get(request.name)
        return pb.GetImageResponse(image=image_to_proto(image))

    @unary_rpc
    async def List(self, request: pb.ListImagesRequest, context: _Ctx) -> pb.ListImagesResponse:  # noqa: N802
        found = await self._store.list(*request.filters)
        return pb.ListImagesResponse(images=[image_to_proto(i) for i in found])

    @unary_rpc
    async def Create(self, request: pb.CreateImageRequest, context: _Ctx) -> pb.CreateImageResponse:  # noqa: N802
        image = await self._store.create(image_from_proto(request.image))
        await announce(self._publisher, "/images/create", events_pb2.ImageCreate, image)
        return pb.CreateImageResponse(image=image_to_proto(image))

    @unary_rpc
    async def Update(self, request: pb.UpdateImageRequest, context: _Ctx) -> pb.UpdateImageResponse:  # noqa: N802
        image = await self._store.update(image_from_proto(request.image), *mask_paths(request))
        await announce(self._publisher, "/images/update", events_pb2.ImageUpdate, image)
        return pb.UpdateImageResponse(image=image_to_proto(image))

    @unary_rpc
    async def Delete(self, request: pb.DeleteImageRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        target = request.target.digest if request.HasField("target") else ""
        await self._store.delete(request.name, target=target)
        await publish_in(
            self._publisher,
            namespace(),
            "/images/delete",
            events_pb2.ImageDelete(name=request.name),
        )
        if request.sync:  # after the event, as containerd 1.7 does
            await self._db.wait_for_gc()
        return empty_pb2.Empty()
