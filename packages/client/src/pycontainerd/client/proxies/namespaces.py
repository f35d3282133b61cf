"""``RemoteNamespaceStore``: namespaces over the Namespaces service.

Mirrors containerd's ``namespaces.Store`` (``Create``, ``Labels``,
``SetLabel``, ``List``, ``Delete``). Namespace calls do not need a
namespace header, but the client sends its own anyway, as Go's does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import field_mask_pb2

from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.client.proxies import Proxy

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping


class RemoteNamespaceStore(Proxy["namespace_pb2_grpc.NamespacesAsyncStub"]):
    """Namespaces of a daemon."""

    new_stub = namespace_pb2_grpc.NamespacesStub

    async def create(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        """Create ``name``; ``AlreadyExistsError`` when it exists."""
        ns = namespace_pb2.Namespace(name=name, labels=dict(labels or {}))
        await self._call(self._stub.Create, namespace_pb2.CreateNamespaceRequest(namespace=ns))

    async def labels(self, name: str) -> dict[str, str]:
        """The labels of ``name``."""
        resp = await self._call(self._stub.Get, namespace_pb2.GetNamespaceRequest(name=name))
        return dict(resp.namespace.labels)

    async def set_label(self, name: str, key: str, value: str) -> None:
        """Set one label; an empty ``value`` removes it."""
        ns = namespace_pb2.Namespace(name=name, labels={key: value} if value else {})
        req = namespace_pb2.UpdateNamespaceRequest(
            namespace=ns, update_mask=field_mask_pb2.FieldMask(paths=[f"labels.{key}"])
        )
        await self._call(self._stub.Update, req)

    async def list(self) -> builtins.list[str]:
        """Every namespace's name, in the daemon's order."""
        resp = await self._call(self._stub.List, namespace_pb2.ListNamespacesRequest())
        return [ns.name for ns in resp.namespaces]

    async def list_with_labels(self) -> builtins.list[tuple[str, dict[str, str]]]:
        """Every namespace with its labels, in one call."""
        resp = await self._call(self._stub.List, namespace_pb2.ListNamespacesRequest())
        return [(ns.name, dict(ns.labels)) for ns in resp.namespaces]

    async def delete(self, name: str) -> None:
        """Delete an empty namespace (``FailedPreconditionError`` if it holds anything)."""
        await self._call(self._stub.Delete, namespace_pb2.DeleteNamespaceRequest(name=name))
