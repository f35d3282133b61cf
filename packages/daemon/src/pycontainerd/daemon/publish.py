"""``containerd publish``: forward one event from a shim to the daemon over ttrpc.

Shims run ``containerd --address <ttrpc address> publish --topic T --namespace N``
with a marshalled ``google.protobuf.Any`` on stdin; this sends it to
``containerd.services.events.ttrpc.v1.Events/Forward``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

FORWARD_SERVICE: Final = "containerd.services.events.ttrpc.v1.Events"
TIMEOUT: Final = 10.0


class PublishError(Exception):
    """Publishing failed; ``containerd: <str>`` is printed."""


async def _forward(address: str, namespace: str, topic: str, payload: bytes) -> None:
    from google.protobuf import any_pb2, empty_pb2
    from google.protobuf.message import DecodeError

    from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
    from pycontainerd.api.ttrpc import Client

    event = any_pb2.Any()
    try:
        event.ParseFromString(payload)
    except DecodeError as exc:
        msg = f"failed to unmarshal event payload from stdin: {exc}"
        raise PublishError(msg) from exc
    request = events_pb2.ForwardRequest()
    envelope = request.envelope
    envelope.timestamp.FromNanoseconds(time.time_ns())
    envelope.namespace = namespace
    envelope.topic = topic
    envelope.event.CopyFrom(event)
    async with await Client.connect(address, timeout=TIMEOUT) as client:
        await client.call(
            FORWARD_SERVICE,
            "Forward",
            request,
            empty_pb2.Empty,
            timeout=TIMEOUT,
            namespace=namespace,
        )


def publish_event(address: str, namespace: str, topic: str, payload: bytes) -> None:
    """Forward the event ``payload`` (a marshalled Any) to the daemon's ttrpc ``address``.

    Raises:
        PublishError: missing topic/namespace/address, a bad payload, or the
            daemon refused (its error text, e.g. ``... : invalid argument``).
    """
    from pycontainerd.core.errdefs import ContainerdError, InvalidArgumentError

    if not topic:
        raise PublishError(str(InvalidArgumentError("topic required to publish event")))
    if not namespace:
        raise PublishError(str(InvalidArgumentError("namespace required to publish event")))
    if not address:
        raise PublishError(str(InvalidArgumentError("address required to publish event")))
    try:
        asyncio.run(_forward(address, namespace, topic, payload))
    except ContainerdError as exc:
        raise PublishError(str(exc)) from exc
    except OSError as exc:
        raise PublishError(str(exc)) from exc
