"""The Events service over gRPC and the Forward service over ttrpc.

``containerd.services.events.v1.Events`` (Publish, Forward, Subscribe) is
served on the daemon's gRPC socket; ``containerd.services.events.ttrpc.v1.Events``
(Forward) on its ttrpc socket, where shims send their task events. One
``EventsService`` object serves both, as upstream's plugin does.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2

from pycontainerd.api.convert import envelope_from_proto, envelope_to_proto
from pycontainerd.api.errgrpc import aborting_on_error, unary_rpc
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as ttrpc_events_pb2
from pycontainerd.api.ttrpc.services import ServiceSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc

    from pycontainerd.api.ttrpc.services import CallContext
    from pycontainerd.api.types import event_pb2
    from pycontainerd.events.exchange import Exchange

log = logging.getLogger(__name__)

TTRPC_SERVICE = "containerd.services.events.ttrpc.v1.Events"
TTRPC_SPEC = ServiceSpec(
    TTRPC_SERVICE, {"Forward": (ttrpc_events_pb2.ForwardRequest, empty_pb2.Empty)}
)


class EventsService(events_pb2_grpc.EventsServicer):
    """Serves the Events API (gRPC) and the Forward API (ttrpc) from an ``Exchange``."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def register(self, server: grpc.aio.Server) -> None:
        events_pb2_grpc.add_EventsServicer_to_server(self, server)

    def register_ttrpc(self, server: Any) -> None:
        server.register_service(TTRPC_SPEC, _TtrpcForward(self._exchange))

    @unary_rpc
    async def Publish(  # noqa: N802 - name fixed by the proto
        self,
        request: events_pb2.PublishRequest,
        context: grpc.aio.ServicerContext[events_pb2.PublishRequest, empty_pb2.Empty],
    ) -> empty_pb2.Empty:
        await self._exchange.publish(request.topic, request.event)  # in the call's namespace
        return empty_pb2.Empty()

    @unary_rpc
    async def Forward(  # noqa: N802
        self,
        request: events_pb2.ForwardRequest,
        context: grpc.aio.ServicerContext[events_pb2.ForwardRequest, empty_pb2.Empty],
    ) -> empty_pb2.Empty:
        await self._exchange.forward(envelope_from_proto(request.envelope))
        return empty_pb2.Empty()

    async def Subscribe(  # noqa: N802
        self,
        request: events_pb2.SubscribeRequest,
        context: grpc.aio.ServicerContext[events_pb2.SubscribeRequest, event_pb2.Envelope],
    ) -> AsyncIterator[event_pb2.Envelope]:
        async with aborting_on_error(context):
            sub = self._exchange.subscribe(*request.filters)
            async with sub:
                async for envelope in sub:
                    yield envelope_to_proto(envelope)


class _TtrpcForward:
    """The ttrpc ``Forward`` method: shims send complete envelopes here."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    async def Forward(  # noqa: N802
        self, ctx: CallContext, request: ttrpc_events_pb2.ForwardRequest
    ) -> empty_pb2.Empty:
        envelope = envelope_from_proto(request.envelope)
        await self._exchange.forward(envelope)
        log.debug("event forwarded: ns=%s topic=%s", envelope.namespace, envelope.topic)
        return empty_pb2.Empty()
