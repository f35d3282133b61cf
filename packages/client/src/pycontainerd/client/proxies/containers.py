"""``RemoteContainerStore``: the container ``Store`` contract over the Containers service."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from pycontainerd.api.convert import container_from_proto, container_to_proto, field_mask
from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc
from pycontainerd.client.proxies import Proxy

if TYPE_CHECKING:
    from pycontainerd.core.containers import Container


class RemoteContainerStore(Proxy["containers_pb2_grpc.ContainersAsyncStub"]):
    """Container records of the client's namespace."""

    new_stub = containers_pb2_grpc.ContainersStub

    async def get(self, container_id: str) -> Container:
        resp = await self._call(self._stub.Get, containers_pb2.GetContainerRequest(id=container_id))
        return container_from_proto(resp.container)

    async def list(self, *filters: str) -> builtins.list[Container]:
        resp = await self._call(
            self._stub.List, containers_pb2.ListContainersRequest(filters=builtins.list(filters))
        )
        return [container_from_proto(c) for c in resp.containers]

    async def create(self, container: Container) -> Container:
        resp = await self._call(
            self._stub.Create,
            containers_pb2.CreateContainerRequest(container=container_to_proto(container)),
        )
        return container_from_proto(resp.container)

    async def update(self, container: Container, *fieldpaths: str) -> Container:
        req = containers_pb2.UpdateContainerRequest(
            container=container_to_proto(container), update_mask=field_mask(fieldpaths)
        )
        resp = await self._call(self._stub.Update, req)
        return container_from_proto(resp.container)

    async def delete(self, container_id: str) -> None:
        await self._call(self._stub.Delete, containers_pb2.DeleteContainerRequest(id=container_id))
