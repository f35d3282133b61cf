"""The event contract: envelopes, publishing, forwarding and subscribing.

Subsystems announce changes (``/images/create``, ``/tasks/exit``...) by
publishing an event under a topic; the daemon wraps it in an ``Envelope``
with the time and the publisher's namespace and hands it to every
subscriber whose filters match (fields ``topic``, ``namespace``,
``event.<field>``). Delivery is best effort and in memory, as in containerd.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime

    from pycontainerd.core.types import AnyValue


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """One event in transit (``containerd.types.Envelope``).

    Attributes:
        timestamp: when it was published (UTC).
        namespace: the namespace it happened in.
        topic: ``/``-separated path of identifiers, e.g. ``/tasks/exit``.
        event: the payload, a serialized protobuf ``Any``.
    """

    timestamp: datetime
    namespace: str
    topic: str
    event: AnyValue


@runtime_checkable
class Publisher(Protocol):
    """Publishes events in the current namespace (containerd's ``events.Publisher``)."""

    async def publish(self, topic: str, event: object) -> None:
        """Publish ``event`` (a protobuf message) under ``topic``.

        Raises ``FailedPreconditionError`` without a current namespace and
        ``InvalidArgumentError`` for a malformed topic.
        """
        ...


@runtime_checkable
class Forwarder(Protocol):
    """Re-publishes envelopes built elsewhere (shims forward their task events)."""

    async def forward(self, envelope: Envelope) -> None:
        """Deliver ``envelope`` unchanged after validating it."""
        ...


@runtime_checkable
class Subscriber(Protocol):
    """Streams events to a consumer."""

    def subscribe(self, *filters: str) -> AsyncIterator[Envelope]:
        """Envelopes from all namespaces matching any of ``filters``, as they happen."""
        ...


@runtime_checkable
class EventBus(Publisher, Subscriber, Protocol):
    """Publishes and subscribes: what the event plugin (the exchange) offers.

    The task manager publishes task events and watches ``/tasks/exit`` on it.
    """
