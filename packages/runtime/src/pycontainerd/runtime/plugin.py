"""Plugin module for pycontainerd-runtime (entry point ``pycontainerd.plugins:runtime``).

Registers the runtime v2 task manager ``io.containerd.runtime.v2.task``, the
Tasks gRPC service ``io.containerd.grpc.v1.tasks``, the ``shim`` sandbox
controller ``io.containerd.sandbox.controller.v1.shim`` and the sandbox
Controller gRPC service ``io.containerd.grpc.v1.sandbox-controllers``, and adds the runtime's
hookspecs (``pycontainerd_runtime_shim_binary``).

Configuration of ``[plugins."io.containerd.runtime.v2.task"]``:

- ``shims``: runtime name -> shim binary (a name looked up on ``PATH`` with the
  ``opt`` plugin's ``bin`` first, or an absolute path). By default
  ``io.containerd.runc.v2`` is served by ``containerd-shim-pyrunc-v2``; one line,
  ``"io.containerd.runc.v2" = "containerd-shim-runc-v2"``, hands it to
  containerd's Go shim. Other runtimes follow containerd's naming rule.
- ``platforms``: exported as the plugin's platforms.

Importing this module must not import grpc or protobuf: the manager and the
service are imported inside the init functions.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.core.events import EventBus
from pycontainerd.core.plugin import (
    ContainerStoreProvider,
    InitContext,
    PluginType,
    Registration,
    ShimEnvironment,
    hookimpl,
)
from pycontainerd.core.snapshots import SnapshotterProvider

if TYPE_CHECKING:
    import pluggy

    from pycontainerd.core.plugin import GrpcService
    from pycontainerd.runtime.manager import TaskManager
    from pycontainerd.runtime.sandbox import ShimController

PLUGIN_ID: Final = "task"
PROPERTY_GRPC_ADDRESS: Final = "io.containerd.plugin.grpc.address"
PROPERTY_TTRPC_ADDRESS: Final = "io.containerd.plugin.ttrpc.address"
DEFAULT_CONFIG: Final[dict[str, object]] = {
    "platforms": ["linux/amd64"],
    "shims": {"io.containerd.runc.v2": "containerd-shim-pyrunc-v2"},
}

_managers: weakref.WeakSet[pluggy.PluginManager] = weakref.WeakSet()


@hookimpl
def pycontainerd_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add the runtime's hookspecs and remember the manager to ask them."""
    from pycontainerd.runtime import hookspecs

    pluginmanager.add_hookspecs(hookspecs)
    _managers.add(pluginmanager)


def _hook_resolver(runtime: str) -> str | None:
    from pycontainerd.runtime.hookspecs import shim_binary

    for pm in list(_managers):
        found = shim_binary(pm, runtime)
        if found:
            return found
    return None


def _string_map(value: object, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        msg = f"{what} must be a table of strings"
        raise TypeError(msg)
    return dict(value)


async def _init_runtime(ic: InitContext) -> TaskManager:
    from pycontainerd.core.errdefs import NotFoundError
    from pycontainerd.runtime.manager import TaskManager

    shims = _string_map(ic.config.get("shims", {}), "shims")
    platforms = ic.config.get("platforms", [])
    if isinstance(platforms, list):
        ic.platforms.extend(str(p) for p in platforms)
    exchange = ic.get_single(PluginType.EVENT, EventBus)
    containers = ic.get_single(PluginType.METADATA, ContainerStoreProvider).container_store()
    opt = ic.find_by_id(PluginType.INTERNAL, "opt", ShimEnvironment)

    async def container_runtime(_ns: str, cid: str) -> str:
        try:
            c = await containers.get(cid)
        except NotFoundError:
            return ""
        return str(c.runtime.name)

    grpc_address = ic.properties.get(PROPERTY_GRPC_ADDRESS, "")
    manager = TaskManager(
        state_dir=ic.state,
        root_dir=ic.root,
        grpc_address=grpc_address,
        ttrpc_address=ic.properties.get(PROPERTY_TTRPC_ADDRESS, f"{grpc_address}.ttrpc"),
        events=exchange,
        shims=shims,
        resolve=_hook_resolver,
        env=None if opt is None else opt.shim_env,
        container_runtime=container_runtime,
        debug=logging.getLogger().isEnabledFor(logging.DEBUG),
    )
    await manager.start()
    return manager


def _snapshotters(ic: InitContext) -> dict[str, Any]:
    """Namespaced views of every loaded snapshotter (the ones the Snapshots service serves)."""
    md = ic.get_single(PluginType.METADATA, SnapshotterProvider)
    return {name: md.snapshotter(name) for name in ic.initialized.get(PluginType.SNAPSHOT, {})}


async def _init_service(ic: InitContext) -> GrpcService:
    from pycontainerd.runtime.manager import TaskManager
    from pycontainerd.runtime.service import TasksService

    manager = ic.get_by_id(PluginType.RUNTIME, PLUGIN_ID, TaskManager)
    md = ic.get_single(PluginType.METADATA, ContainerStoreProvider)
    return TasksService(manager, md.container_store(), _snapshotters(ic))


async def _init_sandbox_controller(ic: InitContext) -> ShimController:
    from pycontainerd.runtime.manager import TaskManager
    from pycontainerd.runtime.sandbox import ShimController

    manager = ic.get_by_id(PluginType.RUNTIME, PLUGIN_ID, TaskManager)
    controller = ShimController(manager)
    await controller.restore()
    return controller


async def _init_sandbox_service(ic: InitContext) -> GrpcService:
    from pycontainerd.runtime.sandbox import ShimController
    from pycontainerd.runtime.sandbox_service import ControllerService

    controllers = {
        name: c
        for name, c in ic.get_by_type(PluginType.SANDBOX_CONTROLLER).items()
        if isinstance(c, ShimController)
    }
    return ControllerService(controllers, ic.get_single(PluginType.EVENT, EventBus))


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The runtime v2 task manager, the Tasks service and the ``shim`` sandbox controller."""
    return [
        Registration(
            type=PluginType.RUNTIME,
            id=PLUGIN_ID,
            requires=(PluginType.EVENT, PluginType.METADATA, PluginType.INTERNAL),
            init=_init_runtime,
            config=DEFAULT_CONFIG,
        ),
        Registration(
            type=PluginType.GRPC,
            id="tasks",
            requires=(PluginType.RUNTIME, PluginType.METADATA),
            init=_init_service,
        ),
        Registration(
            type=PluginType.SANDBOX_CONTROLLER,
            id="shim",
            requires=(PluginType.RUNTIME, PluginType.EVENT),
            init=_init_sandbox_controller,
        ),
        Registration(
            type=PluginType.GRPC,
            id="sandbox-controllers",
            requires=(PluginType.SANDBOX_CONTROLLER, PluginType.EVENT),
            init=_init_sandbox_service,
        ),
    ]
