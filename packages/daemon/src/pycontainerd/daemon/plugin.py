"""The daemon's own plugins (entry point ``pycontainerd.plugins:daemon``).

* ``io.containerd.grpc.v1.version`` — the Version service;
* ``io.containerd.service.v1.introspection-service`` and
  ``io.containerd.grpc.v1.introspection`` — plugin listing and server info;
* ``io.containerd.grpc.v1.healthcheck`` — ``grpc.health.v1.Health``;
* ``io.containerd.internal.v1.opt`` — the managed ``opt`` directory.

Importing this module must not import grpc: the gRPC adaptors are imported
inside the init functions, which only the daemon awaits.
"""

from __future__ import annotations

from pathlib import Path

from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl
from pycontainerd.daemon.introspection import Introspection
from pycontainerd.daemon.opt import Opt, default_path, set_current


async def _init_version(ic: InitContext) -> object:
    from pycontainerd.daemon.services.version import VersionService

    return VersionService()


async def _init_introspection_local(ic: InitContext) -> Introspection:
    from pycontainerd.daemon.plugins import current_plugins

    return Introspection(current_plugins.get(), ic.root.parent)


async def _init_introspection_grpc(ic: InitContext) -> object:
    from pycontainerd.daemon.services.introspection import IntrospectionService

    local = ic.get_by_id(PluginType.SERVICE, "introspection-service", Introspection)
    return IntrospectionService(local)


async def _init_health(ic: InitContext) -> object:
    from pycontainerd.daemon.services.health import HealthService

    return HealthService()


async def _init_opt(ic: InitContext) -> Opt:
    raw = ic.config.get("path") or default_path()
    path = Path(str(raw))
    if not path.is_absolute():
        msg = f"opt path must be absolute: {raw}"
        raise ValueError(msg)
    ic.exports["path"] = str(path)
    opt = Opt(path)
    set_current(opt)
    return opt


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """Declare the daemon's services; nothing is built here."""
    return [
        Registration(type=PluginType.GRPC, id="version", init=_init_version),
        Registration(
            type=PluginType.SERVICE, id="introspection-service", init=_init_introspection_local
        ),
        Registration(
            type=PluginType.GRPC,
            id="introspection",
            requires=(PluginType.SERVICE,),
            init=_init_introspection_grpc,
        ),
        Registration(type=PluginType.GRPC, id="healthcheck", init=_init_health),
        Registration(
            type=PluginType.INTERNAL,
            id="opt",
            init=_init_opt,
            config={"path": default_path()},
        ),
    ]
