"""What the metadata servicers share: request scope, field masks, publishing.

``request_scope`` is :func:`pycontainerd.api.grpcutil.request_scope`: the stores
validate the namespace (``namespace_required``), so a missing header reads as
``namespace is required``.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pycontainerd.api.grpcutil import request_scope
from pycontainerd.core import namespaces

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from google.protobuf import field_mask_pb2, message

    from pycontainerd.core.events import Publisher

__all__ = ["announce", "mask_paths", "publish_in", "request_scope"]


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


class Labelled(Protocol):
    """A record with a name and labels (an image, a namespace)."""

    @property
    def name(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...


async def announce(
    publisher: Publisher | None,
    topic: str,
    event: Callable[..., Any],
    record: Labelled,
    ns: str | None = None,
) -> None:
    """Publish the ``event`` type (a create or update) of ``record``'s name and labels.

    In namespace ``ns``, by default the request's.
    """
    announced = event(name=record.name, labels=dict(record.labels))
    await publish_in(publisher, namespaces.namespace() if ns is None else ns, topic, announced)
