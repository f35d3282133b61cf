"""Plugin module for pycontainerd-content (entry point ``pycontainerd.plugins:content``).

Three registrations, layered as containerd layers them:

- ``io.containerd.content.v1.content``: the ``LocalStore`` under the plugin's
  root (exports ``root``). The metadata plugin builds its namespaced view on it.
- ``io.containerd.service.v1.content-service``: the metadata plugin's
  namespaced content store wrapped in ``EventStore``, which publishes
  ``/content/delete`` on the exchange.
- ``io.containerd.grpc.v1.content``: the ``ContentService`` over that store.

Importing this module must not import grpc: heavy imports happen inside the
init functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.core.content import Store
from pycontainerd.core.events import Publisher
from pycontainerd.core.plugin import (
    ContentStoreProvider,
    InitContext,
    PluginType,
    Registration,
    hookimpl,
)

if TYPE_CHECKING:
    from pycontainerd.content.local import LocalStore


async def _init_local(ic: InitContext) -> LocalStore:
    from pycontainerd.content.local import LocalStore

    ic.root.mkdir(parents=True, exist_ok=True)
    store = LocalStore(ic.root)
    ic.exports.update(store.exports())
    return store


async def _init_content_service(ic: InitContext) -> Store:
    from pycontainerd.content.store import EventStore

    store = ic.get_single(PluginType.METADATA, ContentStoreProvider).content_store()
    return EventStore(store, ic.get_single(PluginType.EVENT, Publisher))


async def _init_grpc(ic: InitContext) -> object:
    from pycontainerd.content.service import ContentService

    return ContentService(ic.get_by_id(PluginType.SERVICE, "content-service", Store))


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The local store, the content service and its gRPC front."""
    return [
        Registration(type=PluginType.CONTENT, id="content", init=_init_local),
        Registration(
            type=PluginType.SERVICE,
            id="content-service",
            requires=(PluginType.METADATA, PluginType.EVENT),
            init=_init_content_service,
        ),
        Registration(
            type=PluginType.GRPC,
            id="content",
            requires=(PluginType.SERVICE,),
            init=_init_grpc,
        ),
    ]
