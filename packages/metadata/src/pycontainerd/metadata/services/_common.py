"""What the metadata servicers share: request scope, field masks, publishing.

``request_scope`` is :func:`pycontainerd.api.grpcutil.request_scope`: the stores
validate the namespace (``namespace_required``), so a missing header reads as
``namespace is required``.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycontainerd.api.grpcutil import request_scope
from pycontainerd.core import namespaces

if TYPE_CHECKING:
    from google.protobuf import field_mask_pb2, message

    from pycontainerd.core.events import Publisher

__all__ = ["mask_paths", "publish_in", "request_scope"]


def mask_paths(msg: message.Message, field: str = "update_mask") -> list[str]:
    """The paths of a request's field mask (empty when unset)."""
    if not msg.HasField(field):
        return []
    mask: field_mask_pb2.FieldMask = getattr(msg, field)
    return list(mask.paths)


async def publish_in(publisher: Publisher | None, ns: str | None, topic: str, event: Any) -> None:
    """Publish ``event`` with ``ns`` as the envelope's namespace (when a publisher is set)."""
    if publisher is None:
        return
    with namespaces.with_namespace(ns):
        await publisher.publish(topic, event)
