"""The pycontainerd plugin model: containerd's shape, pluggy's discovery.

A distribution contributes plugins by exposing a *plugin module* under the
entry-point group ``pycontainerd.plugins``::

    [project.entry-points."pycontainerd.plugins"]
    my-snapshotter = "my_package.plugin"

The module implements the core hook ``pycontainerd_plugins`` and returns
``Registration`` objects. The daemon orders them by ``requires`` and awaits
each ``init(InitContext)``; an init may raise ``SkipPluginError`` to opt out.
An init asks for earlier plugins by type and contract
(``ic.get_single(PluginType.METADATA, ContentStoreProvider)``): the contracts
live in :mod:`pycontainerd.core.plugin.contracts` and the context checks them.
Subsystems that own further extension points add their hookspecs through the
historic hook ``pycontainerd_addhooks``.

Importing this package must not import grpc.
"""

from __future__ import annotations

from pycontainerd.core.plugin.contracts import (
    ContainerStoreProvider,
    ContentStoreProvider,
    MetadataProvider,
    PluginContractError,
    PluginInfoProvider,
    ShimEnvironment,
)
from pycontainerd.core.plugin.graph import ID_ALREADY_REGISTERED, PluginCycleError, ordered
from pycontainerd.core.plugin.manager import DISABLE_AUTOLOAD_ENV, collect, make_plugin_manager
from pycontainerd.core.plugin.markers import ENTRY_POINT_GROUP, PROJECT, hookimpl, hookspec
from pycontainerd.core.plugin.registration import (
    SKIP_PLUGIN_TEXT,
    Closable,
    GrpcService,
    InitContext,
    MetricsSource,
    Registration,
    SkipPluginError,
    TtrpcService,
)
from pycontainerd.core.plugin.types import PluginType

__all__ = [
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "ID_ALREADY_REGISTERED",
    "PROJECT",
    "SKIP_PLUGIN_TEXT",
    "Closable",
    "ContainerStoreProvider",
    "ContentStoreProvider",
    "GrpcService",
    "InitContext",
    "MetadataProvider",
    "MetricsSource",
    "PluginContractError",
    "PluginCycleError",
    "PluginInfoProvider",
    "PluginType",
    "Registration",
    "ShimEnvironment",
    "SkipPluginError",
    "TtrpcService",
    "collect",
    "hookimpl",
    "hookspec",
    "make_plugin_manager",
    "ordered",
]
