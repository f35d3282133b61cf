"""``RemoteEventService``: publish, forward and subscribe over the Events service.

Satisfies ``pycontainerd.core.events`` ``Publisher``, ``Forwarder`` and
``Subscriber``. ``publish`` packs a protobuf message as containerd's typeurl
does (type URL = the message's full name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import message

from pycontainerd.api import typeurl
from pycontainerd.api.convert import envelope_from_proto, envelope_to_proto
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.client._errors import rpc_errors
from pycontainerd.client.proxies import Proxy
from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.core.events import Envelope


class RemoteEventService(Proxy["events_pb2_grpc.EventsAsyncStub"]):
    """Events of a daemon."""

    new_stub = events_pb2_grpc.EventsStub

    async def publish(self, topic: str, event: object) -> None:
        if not isinstance(event, message.Message):
            msg = f"event must be a protobuf message, not {type(event).__name__}"
            raise InvalidArgumentError(msg)
        req = events_pb2.PublishRequest(topic=topic, event=typeurl.pack(event))
        await self._call(self._stub.Publish, req)

    async def forward(self, envelope: Envelope) -> None:
        req = events_pb2.ForwardRequest(envelope=envelope_to_proto(envelope))
        await self._call(self._stub.Forward, req)

    async def subscribe(self, *filters: str) -> AsyncIterator[Envelope]:
        call = self._stub.Subscribe(
            events_pb2.SubscribeRequest(filters=list(filters)), metadata=self._client.metadata()
        )
        try:
            with rpc_errors():
                async for env in call:
                    yield envelope_from_proto(env)
        finally:
            call.cancel()
