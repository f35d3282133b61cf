"""``RemoteLeaseManager``: the lease ``Manager`` contract over the Leases service."""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING

from pycontainerd.api.convert import lease_from_proto, resource_from_proto, resource_to_proto
from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc
from pycontainerd.client.proxies import Proxy

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycontainerd.core.leases import Lease, Resource


class RemoteLeaseManager(Proxy["leases_pb2_grpc.LeasesAsyncStub"]):
    """Leases of the client's namespace."""

    new_stub = leases_pb2_grpc.LeasesStub

    async def create(self, lease_id: str = "", *, labels: Mapping[str, str] | None = None) -> Lease:
        """Create a lease; an empty ``lease_id`` lets the daemon choose one."""
        resp = await self._call(
            self._stub.Create, leases_pb2.CreateRequest(id=lease_id, labels=dict(labels or {}))
        )
        return lease_from_proto(resp.lease)

    async def delete(self, lease_id: str, *, sync: bool = False) -> None:
        await self._call(self._stub.Delete, leases_pb2.DeleteRequest(id=lease_id, sync=sync))

    async def list(self, *filters: str) -> builtins.list[Lease]:
        resp = await self._call(
            self._stub.List, leases_pb2.ListRequest(filters=builtins.list(filters))
        )
        return [lease_from_proto(lease) for lease in resp.leases]

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        await self._call(
            self._stub.AddResource,
            leases_pb2.AddResourceRequest(id=lease_id, resource=resource_to_proto(resource)),
        )

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        await self._call(
            self._stub.DeleteResource,
            leases_pb2.DeleteResourceRequest(id=lease_id, resource=resource_to_proto(resource)),
        )

    async def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        resp = await self._call(
            self._stub.ListResources, leases_pb2.ListResourcesRequest(id=lease_id)
        )
        return [resource_from_proto(r) for r in resp.resources]
