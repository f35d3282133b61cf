"""``RemoteImageStore``: the image ``Store`` contract over the Images service."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from pycontainerd.api.convert import field_mask, image_from_proto, image_to_proto
from pycontainerd.api.services.images.v1 import images_pb2, images_pb2_grpc
from pycontainerd.client.proxies import Proxy

if TYPE_CHECKING:
    from pycontainerd.core.images import Image


class RemoteImageStore(Proxy["images_pb2_grpc.ImagesAsyncStub"]):
    """Image records of the client's namespace."""

    new_stub = images_pb2_grpc.ImagesStub

    async def get(self, name: str) -> Image:
        resp = await self._call(self._stub.Get, images_pb2.GetImageRequest(name=name))
        return image_from_proto(resp.image)

    async def list(self, *filters: str) -> builtins.list[Image]:
        resp = await self._call(
            self._stub.List, images_pb2.ListImagesRequest(filters=builtins.list(filters))
        )
        return [image_from_proto(i) for i in resp.images]

    async def create(self, image: Image) -> Image:
        resp = await self._call(
            self._stub.Create, images_pb2.CreateImageRequest(image=image_to_proto(image))
        )
        return image_from_proto(resp.image)

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        req = images_pb2.UpdateImageRequest(
            image=image_to_proto(image), update_mask=field_mask(fieldpaths)
        )
        resp = await self._call(self._stub.Update, req)
        return image_from_proto(resp.image)

    async def delete(self, name: str, *, sync: bool = False) -> None:
        await self._call(self._stub.Delete, images_pb2.DeleteImageRequest(name=name, sync=sync))
