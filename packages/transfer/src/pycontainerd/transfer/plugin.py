"""Plugin module for pycontainerd-transfer (entry point ``pycontainerd.plugins:transfer``).

Registers, with containerd 2.x's ids:

- ``io.containerd.streaming.v1.manager``: the stream manager;
- ``io.containerd.image-verifier.v1.bindir``: the image verifiers a pull
  asks first (config ``bin_dir``, ``max_verifiers = 10``,
  ``per_verifier_timeout = "10s"``, as upstream);
- ``io.containerd.transfer.v1.local``: the local transferrer (config
  ``config_path``, ``max_concurrent_downloads = 3``,
  ``max_concurrent_uploaded_layers = 3``, as upstream);
- ``io.containerd.grpc.v1.streaming`` and ``io.containerd.grpc.v1.transfer``.

Importing this module must not import grpc: the service modules are imported
inside the init functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl

if TYPE_CHECKING:
    from pycontainerd.core.plugin import GrpcService
    from pycontainerd.transfer.local import LocalTransferrer
    from pycontainerd.transfer.streams import StreamManager
    from pycontainerd.transfer.verifier import BinDirVerifier

CONFIG_DEFAULTS = {
    "config_path": "",
    "max_concurrent_downloads": 3,
    "max_concurrent_uploaded_layers": 3,
}


VERIFIER_DEFAULTS = {
    "bin_dir": "/opt/containerd/image-verifier/bin",
    "max_verifiers": 10,
    "per_verifier_timeout": "10s",
}


async def _init_bindir(ic: InitContext) -> BinDirVerifier:
    from pycontainerd.config.duration import parse_duration
    from pycontainerd.transfer.verifier import BinDirVerifier

    timeout = ic.config.get("per_verifier_timeout", "10s")
    return BinDirVerifier(
        bin_dir=str(ic.config.get("bin_dir", VERIFIER_DEFAULTS["bin_dir"])),
        max_verifiers=int(ic.config.get("max_verifiers", 10)),
        timeout=parse_duration(timeout) if isinstance(timeout, str) else float(timeout),
    )


async def _init_manager(ic: InitContext) -> StreamManager:
    from pycontainerd.core import namespaces
    from pycontainerd.transfer.streams import StreamManager

    md: Any = ic.get_single(PluginType.METADATA)

    async def lease_ids(ns: str) -> set[str]:
        with namespaces.with_namespace(ns):
            return {lease.id for lease in await md.lease_store().list()}

    return StreamManager(lease_ids)


async def _init_local(ic: InitContext) -> LocalTransferrer:
    import logging

    # The registry stack (the resolver, about 2 MiB resident; httpx as well once something
    # is pushed) is imported by the first transfer that needs it, not here: a daemon that
    # never pulls never pays.
    from pycontainerd.transfer.local import (
        DEFAULT_SNAPSHOTTER,
        LocalServices,
        LocalTransferrer,
        TransferConfig,
        trim_registry_stack,
    )

    trim_registry_stack()  # for every later import of httpx in the daemon (pushes, proxies)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no log line per registry request
    md = ic.get_single(PluginType.METADATA)
    differ = ic.get_by_id(PluginType.DIFF, "walking")
    config = TransferConfig(
        config_path=str(ic.config.get("config_path", "")),
        max_concurrent_downloads=int(ic.config.get("max_concurrent_downloads", 3)),
        max_concurrent_uploaded_layers=int(ic.config.get("max_concurrent_uploaded_layers", 3)),
    )
    services = LocalServices(md, differ, DEFAULT_SNAPSHOTTER)  # type: ignore[arg-type]
    from pycontainerd.core.errdefs import NotFoundError
    from pycontainerd.transfer.verifier import ImageVerifier

    try:
        verifiers = ic.get_by_type(PluginType.IMAGE_VERIFIER, ImageVerifier)
    except NotFoundError:  # every verifier disabled: pulls are not verified
        verifiers = {}
    return LocalTransferrer(services, config, verifiers=verifiers)


def _manager(ic: InitContext) -> StreamManager:
    from pycontainerd.transfer.streams import StreamManager

    manager = ic.get_by_id(PluginType.STREAMING, "manager")
    if not isinstance(manager, StreamManager):
        msg = f"{PluginType.STREAMING}.manager is not pycontainerd's stream manager"
        raise TypeError(msg)
    return manager


async def _init_streaming_service(ic: InitContext) -> GrpcService:
    from pycontainerd.transfer.service import StreamingService

    return StreamingService(_manager(ic))


async def _init_transfer_service(ic: InitContext) -> GrpcService:
    from pycontainerd.transfer.local import LocalTransferrer
    from pycontainerd.transfer.service import TransferService

    local = ic.get_by_id(PluginType.TRANSFER, "local")
    if not isinstance(local, LocalTransferrer):
        msg = f"{PluginType.TRANSFER}.local is not pycontainerd's transferrer"
        raise TypeError(msg)
    return TransferService(local, _manager(ic))


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The stream manager, the local transferrer and their gRPC services."""
    return [
        Registration(
            type=PluginType.STREAMING,
            id="manager",
            requires=(PluginType.METADATA,),
            init=_init_manager,
        ),
        Registration(
            type=PluginType.IMAGE_VERIFIER,
            id="bindir",
            init=_init_bindir,
            config=dict(VERIFIER_DEFAULTS),
        ),
        Registration(
            type=PluginType.TRANSFER,
            id="local",
            requires=(
                PluginType.METADATA,
                PluginType.DIFF,
                PluginType.SNAPSHOT,
                PluginType.IMAGE_VERIFIER,
            ),
            init=_init_local,
            config=dict(CONFIG_DEFAULTS),
        ),
        Registration(
            type=PluginType.GRPC,
            id="streaming",
            requires=(PluginType.STREAMING,),
            init=_init_streaming_service,
        ),
        Registration(
            type=PluginType.GRPC,
            id="transfer",
            requires=(PluginType.TRANSFER, PluginType.STREAMING),
            init=_init_transfer_service,
        ),
    ]
