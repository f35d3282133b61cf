"""Plugin module for pycontainerd-snapshots (entry point ``pycontainerd.plugins``).

Registers the ``overlayfs`` and ``native`` snapshotters
(``io.containerd.snapshotter.v1.*``), the walking differ
(``io.containerd.differ.v1.walking``) and the gRPC services
``io.containerd.grpc.v1.snapshots`` and ``io.containerd.grpc.v1.diff``.

Importing this module must not import grpc: implementations and services
are imported inside the init functions.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from pycontainerd.core.content import Store
from pycontainerd.core.events import Publisher
from pycontainerd.core.plugin import (
    ContentStoreProvider,
    InitContext,
    PluginType,
    Registration,
    hookimpl,
)
from pycontainerd.core.snapshots import SnapshotterProvider

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycontainerd.core.plugin import GrpcService
    from pycontainerd.core.snapshots import Snapshotter
    from pycontainerd.snapshots.differ import WalkingDiffer

#: Temporary mounts live under ``<daemon root>/tmpmounts``.
TEMP_MOUNTS: Final = "tmpmounts"
#: Differs the Diff service tries, in order (upstream's ``default``).
DEFAULT_DIFFERS: Final = ("walking",)


async def _init_overlayfs(ic: InitContext) -> Snapshotter:
    from pycontainerd.snapshots.overlay import OverlaySnapshotter, check_overlay_support

    await asyncio.to_thread(check_overlay_support, ic.root)
    ic.exports["root"] = str(ic.root)
    return await asyncio.to_thread(OverlaySnapshotter, ic.root)


async def _init_native(ic: InitContext) -> Snapshotter:
    from pycontainerd.snapshots.native import NativeSnapshotter

    ic.exports["root"] = str(ic.root)
    return await asyncio.to_thread(NativeSnapshotter, ic.root)


def _content_store(ic: InitContext) -> Store:
    """The namespaced content store of the metadata plugin, else the plain one."""
    md = ic.get_optional(PluginType.METADATA, ContentStoreProvider)
    if md is not None:
        return md.content_store()
    return ic.get_single(PluginType.CONTENT, Store)


async def _init_walking(ic: InitContext) -> WalkingDiffer:
    from pycontainerd.snapshots import mount
    from pycontainerd.snapshots.applyworker import ApplyWorkers
    from pycontainerd.snapshots.differ import WalkingDiffer

    location = ic.root.parent / TEMP_MOUNTS
    await asyncio.to_thread(mount.clean_temp_mounts, location)
    mount.set_temp_location(location)
    # layers are extracted by an applier process, started now (without waiting for it)
    workers = ApplyWorkers()
    workers.start()
    return WalkingDiffer(_content_store(ic), temp_location=location, workers=workers)


def _namespaced(ic: InitContext) -> dict[str, Snapshotter]:
    """Namespaced views of every loaded snapshotter, from the metadata plugin.

    Raises:
        PluginContractError: the metadata plugin does not hand out snapshotters.
    """
    md = ic.get_single(PluginType.METADATA, SnapshotterProvider)
    return {name: md.snapshotter(name) for name in ic.initialized.get(PluginType.SNAPSHOT, {})}


def _publisher(ic: InitContext) -> Publisher | None:
    return ic.get_optional(PluginType.EVENT, Publisher)


async def _init_snapshots_service(ic: InitContext) -> GrpcService:
    from pycontainerd.snapshots.service import SnapshotsService

    return SnapshotsService(_namespaced(ic), _publisher(ic))


async def _init_diff_service(ic: InitContext) -> GrpcService:
    from pycontainerd.snapshots.differ import WalkingDiffer
    from pycontainerd.snapshots.service import DiffService

    names: Mapping[str, object] | list[str] = ic.config.get("default", list(DEFAULT_DIFFERS))
    return DiffService([ic.get_by_id(PluginType.DIFF, str(name), WalkingDiffer) for name in names])


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """Snapshotters, the walking differ and the Snapshots/Diff services."""
    return [
        Registration(type=PluginType.SNAPSHOT, id="overlayfs", init=_init_overlayfs),
        Registration(type=PluginType.SNAPSHOT, id="native", init=_init_native),
        Registration(
            type=PluginType.DIFF,
            id="walking",
            requires=(PluginType.METADATA,),
            init=_init_walking,
        ),
        Registration(
            type=PluginType.GRPC,
            id="snapshots",
            requires=(PluginType.METADATA, PluginType.SNAPSHOT, PluginType.EVENT),
            init=_init_snapshots_service,
        ),
        Registration(
            type=PluginType.GRPC,
            id="diff",
            requires=(PluginType.DIFF,),
            init=_init_diff_service,
            config={"default": list(DEFAULT_DIFFERS)},
        ),
    ]
