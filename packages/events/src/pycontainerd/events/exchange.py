"""The event exchange: publish, forward and subscribe (containerd's ``events/exchange``).

Every event travels in an ``Envelope`` (``pycontainerd.core.events``): when
it happened, the namespace it happened in, its topic (``/content/delete``)
and the payload as a serialized ``google.protobuf.Any`` (``AnyValue``) under
containerd's type URL (``containerd.events.ContentDelete``).

- ``publish(topic, event)`` builds the envelope (now, the current namespace
  from ``pycontainerd.core.namespaces``) and hands it to every subscriber.
- ``forward(envelope)`` passes an envelope built elsewhere (by a shim) on
  unchanged, after validating it.
- ``subscribe(*filters)`` returns a ``Subscription``, an async iterator of
  envelopes from all namespaces that match any of the filters (fields
  ``topic``, ``namespace`` and ``event.<field>``).

Delivery is in memory and best effort, as upstream: no persistence, no replay
for late subscribers.

**Overflow policy.** Upstream gives each subscriber an unbounded queue, so a
subscriber that stops reading grows the daemon's memory without limit. Here
each subscription has a bounded queue (``queue_size`` envelopes, default
1024). Publishing never blocks and never waits for a subscriber. When a
subscriber's queue is full, that subscriber is *dropped*: it stops receiving
new events, the events already queued are still delivered, and then its
iterator raises ``ResourceExhaustedError`` (``event subscriber too slow:
dropped after 1024 queued events``). Over gRPC the Subscribe stream ends with
RESOURCE_EXHAUSTED, so the client knows it missed events and may subscribe
again. Other subscribers and publishers are not affected.

Importing this module must not import grpc; protobuf is imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from pycontainerd.core import filters as core_filters
from pycontainerd.core import identifiers, namespaces
from pycontainerd.core.closing import AsyncClosing
from pycontainerd.core.errdefs import (
    ContainerdError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from pycontainerd.core.events import Envelope
from pycontainerd.core.types import AnyValue

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from google.protobuf import message

log = logging.getLogger(__name__)

#: Envelopes a subscriber may have queued before it is dropped.
DEFAULT_QUEUE_SIZE: Final = 1024


__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "Envelope",
    "Exchange",
    "Subscription",
    "pack_event",
    "unpack_event",
    "validate_envelope",
    "validate_topic",
]


def _quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def validate_topic(topic: str) -> None:
    """Check a topic: ``/`` followed by ``/``-separated identifiers.

    Raises:
        InvalidArgumentError: ``envelope topic "<t>": must start with '/'`` and
            the like, in upstream's words.
    """
    reason: str | None = None
    if not topic:
        reason = "must not be empty"
    elif not topic.startswith("/"):
        reason = "must start with '/'"
    elif len(topic) == 1:
        reason = "must have at least one component"
    else:
        for component in topic[1:].split("/"):
            try:
                identifiers.validate(component)
            except InvalidArgumentError as exc:
                reason = f"failed validation on component {_quote(component)}: {exc.message}"
                break
    if reason is not None:
        msg = f"envelope topic {_quote(topic)}: {reason}"
        raise InvalidArgumentError(msg)


def validate_envelope(envelope: Envelope) -> None:
    """Check a forwarded envelope: namespace, topic and timestamp.

    Raises:
        InvalidArgumentError: ``event envelope has invalid namespace: ...``,
            ``envelope topic ...`` or ``timestamp must be set on forwarded event``.
    """
    try:
        identifiers.validate(envelope.namespace)
    except InvalidArgumentError as exc:
        msg = f"event envelope has invalid namespace: {exc.message}"
        raise InvalidArgumentError(msg) from exc
    validate_topic(envelope.topic)
    if envelope.timestamp.timestamp() == 0:
        msg = "timestamp must be set on forwarded event"
        raise InvalidArgumentError(msg)


def pack_event(event: object) -> AnyValue:
    """``event`` as a serialized ``Any`` under containerd's type URL.

    ``event`` may be a protobuf message, a protobuf ``Any`` (kept as is) or an
    ``AnyValue`` (kept as is).

    Raises:
        InvalidArgumentError: ``event`` is none of these.
    """
    if isinstance(event, AnyValue):
        return event
    from google.protobuf import any_pb2
    from google.protobuf import message as pb_message

    from pycontainerd.api import typeurl

    if isinstance(event, any_pb2.Any):
        return AnyValue(type_url=event.type_url, value=event.value)
    if isinstance(event, pb_message.Message):
        packed = typeurl.pack(event)
        return AnyValue(type_url=packed.type_url, value=packed.value)
    msg = f"cannot publish {type(event).__name__}: not a protobuf message"
    raise InvalidArgumentError(msg)


def unpack_event(event: AnyValue) -> object:
    """The decoded payload of ``event`` (a message for protobuf types).

    Raises:
        NotFoundError: the type URL is unknown.
        InvalidArgumentError: the bytes do not decode.
    """
    from google.protobuf import any_pb2

    from pycontainerd.api import typeurl

    return typeurl.unpack(any_pb2.Any(type_url=event.type_url, value=event.value))


class _EnvelopeFields:
    """Filter adaptor over an envelope; the payload is decoded once, on demand."""

    def __init__(self, envelope: Envelope) -> None:
        self._envelope = envelope
        self._decoded: message.Message | None = None
        self._decode_failed = False

    def _event(self) -> message.Message | None:
        if self._decoded is None and not self._decode_failed:
            from google.protobuf import message as pb_message

            try:
                value = unpack_event(self._envelope.event)
            except ContainerdError:
                value = None
            if isinstance(value, pb_message.Message):
                self._decoded = value
            else:
                self._decode_failed = True
        return self._decoded

    def field(self, fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        head, rest = fieldpath[0], fieldpath[1:]
        if head == "namespace" and not rest:
            return self._envelope.namespace, True
        if head == "topic" and not rest:
            return self._envelope.topic, True
        if head == "event" and rest:
            event = self._event()
            return ("", False) if event is None else message_field(event, rest)
        return "", False


def message_field(  # noqa: PLR0911 - one answer per field kind
    msg: message.Message, fieldpath: Sequence[str]
) -> tuple[str, bool]:
    """Look up a string field of a protobuf message by field names.

    Like containerd's generated ``Field`` adaptors, only string fields and
    string maps (``labels.<key>``, the rest of the path joined with ``.``)
    are filterable; nested messages are descended into.
    """
    from google.protobuf.descriptor import FieldDescriptor

    node = msg
    for i, name in enumerate(fieldpath):
        fd = node.DESCRIPTOR.fields_by_name.get(name)
        if fd is None:
            return "", False
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.type != FieldDescriptor.TYPE_STRING:
                return "", False
            mapping: Mapping[str, str] = getattr(node, name)
            key = ".".join(fieldpath[i + 1 :])
            return (mapping[key], True) if key in mapping else ("", False)
        if fd.is_repeated:
            return "", False
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            node = getattr(node, name)
            continue
        if fd.type == FieldDescriptor.TYPE_STRING and i == len(fieldpath) - 1:
            return str(getattr(node, name)), True
        return "", False
    return "", False


class Subscription(AsyncClosing):
    """An async iterator of envelopes; ``close`` (or ``async with``) ends it.

    Iteration stops when the subscription is closed or the exchange shuts
    down; it raises ``ResourceExhaustedError`` after the queued events when
    the subscriber was dropped for falling behind (see the module docstring).
    """

    def __init__(self, exchange: Exchange, flt: core_filters.Filter, queue_size: int) -> None:
        self._exchange = exchange
        self._filter = flt
        self._queue: asyncio.Queue[Envelope | None] = asyncio.Queue()
        self._size = queue_size
        self._queued = 0
        self._closed = False
        self._error: ContainerdError | None = None

    @property
    def closed(self) -> bool:
        """Whether the subscription receives no more events."""
        return self._closed

    def _offer(self, envelope: Envelope, fields: _EnvelopeFields) -> None:
        if self._closed or not self._filter.match(fields):
            return
        if self._queued >= self._size:
            msg = f"event subscriber too slow: dropped after {self._size} queued events"
            self._error = ResourceExhaustedError(msg)
            log.warning("dropping event subscriber: %s queued events not read", self._size)
            self._finish()
            return
        self._queued += 1
        self._queue.put_nowait(envelope)

    def _finish(self) -> None:
        if not self._closed:
            self._closed = True
            self._exchange._unsubscribe(self)
            # the sentinel is not counted: a full subscriber still learns it ended
            self._queue.put_nowait(None)

    def close(self) -> None:
        """Stop receiving; a pending ``__anext__`` returns StopAsyncIteration."""
        self._finish()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Envelope:
        item = await self._queue.get()
        if item is None:
            self._queue.put_nowait(None)  # later calls end too
            if self._error is not None:
                raise self._error
            raise StopAsyncIteration
        self._queued -= 1
        return item

    async def aclose(self) -> None:
        """:meth:`close`, for ``async with`` (nothing to wait for)."""
        self.close()


class Exchange:
    """Broadcasts envelopes to subscribers with bounded queues.

    Args:
        queue_size: envelopes a subscriber may have queued before it is
            dropped (must be positive).
    """

    def __init__(self, *, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size <= 0:
            msg = f"queue size must be positive, got {queue_size}"
            raise InvalidArgumentError(msg)
        self._queue_size = queue_size
        self._subscribers: set[Subscription] = set()

    @property
    def subscribers(self) -> int:
        """Number of live subscriptions."""
        return len(self._subscribers)

    async def publish(self, topic: str, event: object) -> None:
        """Publish ``event`` (a protobuf message or ``Any``) on ``topic`` in the current namespace.

        Raises:
            FailedPreconditionError: ``failed publishing event: namespace is required``.
            InvalidArgumentError: bad namespace, topic or event.
        """
        try:
            ns = namespaces.namespace_required()
        except ContainerdError as exc:
            msg = f"failed publishing event: {exc.message}"
            raise type(exc)(msg) from exc
        validate_topic(topic)
        self._broadcast(
            Envelope(
                timestamp=datetime.now(UTC), namespace=ns, topic=topic, event=pack_event(event)
            )
        )

    async def forward(self, envelope: Envelope) -> None:
        """Pass an envelope built elsewhere to the subscribers, unchanged.

        Raises:
            InvalidArgumentError: the envelope does not validate.
        """
        validate_envelope(envelope)
        self._broadcast(envelope)

    def subscribe(self, *filters: str, queue_size: int | None = None) -> Subscription:
        """Subscribe to envelopes matching any of ``filters`` (all when none).

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        flt = core_filters.parse(*filters)
        sub = Subscription(self, flt, queue_size or self._queue_size)
        self._subscribers.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def _broadcast(self, envelope: Envelope) -> None:
        fields = _EnvelopeFields(envelope)
        for sub in list(self._subscribers):
            sub._offer(envelope, fields)

    async def aclose(self) -> None:
        """End every subscription (daemon shutdown)."""
        for sub in list(self._subscribers):
            with contextlib.suppress(Exception):
                sub.close()
