"""Plugin module for pycontainerd-snapshots-btrfs (entry point ``pycontainerd.plugins``).

Registers ``io.containerd.snapshotter.v1.btrfs``; it skips itself when the
root is not on btrfs. Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl

if TYPE_CHECKING:
    from pycontainerd.core.snapshots import Snapshotter


async def _init_btrfs(ic: InitContext) -> Snapshotter:
    from pycontainerd.snapshots_btrfs.btrfs import BtrfsSnapshotter, check_btrfs

    await asyncio.to_thread(check_btrfs, ic.root)
    ic.exports["root"] = str(ic.root)
    return await asyncio.to_thread(BtrfsSnapshotter, ic.root)


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The btrfs snapshotter."""
    return [Registration(type=PluginType.SNAPSHOT, id="btrfs", init=_init_btrfs)]
