"""Plugin module for pycontainerd-cri (entry point ``pycontainerd.plugins:cri``).

Registers ``io.containerd.grpc.v1.cri``: the Kubernetes CRI ``runtime.v1``
RuntimeService and ImageService on the daemon's gRPC socket, as containerd's
CRI plugin serves them. Like containerd's, it is a client of the daemon's
in-process plugins, reached through the ``InitContext``: the metadata database
(containers, images, content, snapshotters), the runtime v2 task manager and
the Transfer plugin's stores (PullImage).
It imports neither the client distribution nor the daemon.

Configuration: ``[plugins."io.containerd.grpc.v1.cri"]``, see
:mod:`pycontainerd.cri.config`.

Importing this module must not import grpc or protobuf.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl
from pycontainerd.cri.config import DEFAULT_CONFIG

if TYPE_CHECKING:
    from pycontainerd.cri.service import CriService

PLUGIN_ID = "cri"


async def _init(ic: InitContext) -> CriService:
    from pycontainerd.cri.config import CriConfig
    from pycontainerd.cri.pull import ImagePuller
    from pycontainerd.cri.sandbox import SandboxManager
    from pycontainerd.cri.service import CriService
    from pycontainerd.metadata.metadata import Metadata
    from pycontainerd.runtime.manager import TaskManager
    from pycontainerd.transfer.local import LocalTransferrer

    config = CriConfig.from_mapping(ic.config)
    md = ic.get_single(PluginType.METADATA)
    if not isinstance(md, Metadata):
        msg = f"{PluginType.METADATA} plugin is not pycontainerd's metadata database"
        raise TypeError(msg)
    tasks = ic.get_by_id(PluginType.RUNTIME, "task")
    if not isinstance(tasks, TaskManager):
        msg = f"{PluginType.RUNTIME}.task is not the runtime v2 task manager"
        raise TypeError(msg)
    transfer = ic.get_by_id(PluginType.TRANSFER, "local")
    if not isinstance(transfer, LocalTransferrer):
        msg = f"{PluginType.TRANSFER}.local is not pycontainerd's transferrer"
        raise TypeError(msg)
    ic.exports["sandbox_image"] = config.sandbox_image
    ic.exports["cni_conf_dir"] = config.cni.conf_dir
    ic.exports["cni_bin_dir"] = config.cni.bin_dir
    sandboxes = SandboxManager(config, md, tasks, ic.state, ic.root)
    sandboxes.puller = ImagePuller(config, transfer.services)
    await sandboxes.restore()
    image_fs = ic.root.parent / f"{PluginType.SNAPSHOT}.{config.snapshotter}"
    service = CriService(config, sandboxes, image_fs)
    await service.containers.restore()
    await service.start_streaming()
    return service


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The CRI gRPC plugin."""
    return [
        Registration(
            type=PluginType.GRPC,
            id=PLUGIN_ID,
            requires=(
                PluginType.METADATA,
                PluginType.RUNTIME,
                PluginType.EVENT,
                PluginType.TRANSFER,
            ),
            init=_init,
            config=DEFAULT_CONFIG,
        )
    ]
