"""Plugin module for pycontainerd-events (entry point ``pycontainerd.plugins:events``).

Registers the exchange (``io.containerd.event.v1.exchange``) and the Events
service (``io.containerd.grpc.v1.events``), which serves the gRPC Events API
and, on the daemon's ttrpc socket, the Forward API shims send events to.

Importing this module must not import grpc: the service module is imported
inside its init function.
"""

from __future__ import annotations

from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl
from pycontainerd.events.exchange import DEFAULT_QUEUE_SIZE, Exchange


async def _init_exchange(ic: InitContext) -> Exchange:
    size = ic.config.get("queue_size", DEFAULT_QUEUE_SIZE)
    if not isinstance(size, int) or isinstance(size, bool):
        msg = f"queue_size must be an integer, got {size!r}"
        raise TypeError(msg)
    return Exchange(queue_size=size)


async def _init_service(ic: InitContext) -> object:
    from pycontainerd.events.service import EventsService

    return EventsService(ic.get_single(PluginType.EVENT, Exchange))


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The exchange and the Events service."""
    return [
        Registration(
            type=PluginType.EVENT,
            id="exchange",
            init=_init_exchange,
            config={"queue_size": DEFAULT_QUEUE_SIZE},
        ),
        Registration(
            type=PluginType.GRPC,
            id="events",
            requires=(PluginType.EVENT,),
            init=_init_service,
        ),
    ]
