"""Plugin module for pycontainerd-metadata (entry point ``pycontainerd.plugins:metadata``).

Registers the metadata database ``io.containerd.metadata.v1.sqlite`` (type
METADATA, after the content store and the snapshotters) and the gRPC
services ``io.containerd.grpc.v1.{namespaces,images,containers,leases}``, and
the garbage collection scheduler ``io.containerd.gc.v1.scheduler``.

Importing this module must not import grpc: service modules are imported
inside their init functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pycontainerd.core.content import Store
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.events import Publisher
from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl
from pycontainerd.metadata.content import POLICIES, SHARED
from pycontainerd.metadata.db import DB_FILENAME
from pycontainerd.metadata.scheduler import DEFAULTS as GC_DEFAULTS

if TYPE_CHECKING:
    from pycontainerd.core.plugin import GrpcService
    from pycontainerd.metadata.metadata import Metadata
    from pycontainerd.metadata.sandboxes import SandboxStore
    from pycontainerd.metadata.scheduler import Scheduler

PLUGIN_ID: Final = "sqlite"
#: Config key, as in containerd's bolt plugin.
POLICY_KEY: Final = "content_sharing_policy"


async def _init_metadata(ic: InitContext) -> Metadata:
    import asyncio

    from pycontainerd.metadata.metadata import Metadata

    policy = ic.config.get(POLICY_KEY, SHARED)
    if policy not in POLICIES:
        msg = f"unknown {POLICY_KEY} {policy!r}, expected one of {', '.join(POLICIES)}"
        raise InvalidArgumentError(msg)
    content = ic.get_single(PluginType.CONTENT, Store)
    snapshotters = dict(ic.initialized.get(PluginType.SNAPSHOT, {}))
    path = ic.root / DB_FILENAME
    md = await asyncio.to_thread(
        Metadata, path, content, snapshotters=snapshotters, policy=str(policy)
    )
    ic.exports["path"] = str(path)
    ic.exports["policy"] = str(policy)
    return md


def _metadata(ic: InitContext) -> Metadata:
    from pycontainerd.metadata.metadata import Metadata

    return ic.get_single(PluginType.METADATA, Metadata)


def _publisher(ic: InitContext) -> Publisher | None:
    return ic.get_optional(PluginType.EVENT, Publisher)


async def _init_namespaces(ic: InitContext) -> GrpcService:
    from pycontainerd.metadata.services.namespaces import NamespacesService

    return NamespacesService(_metadata(ic).namespace_store(), _publisher(ic))


async def _init_images(ic: InitContext) -> GrpcService:
    from pycontainerd.metadata.services.images import ImagesService

    md = _metadata(ic)
    return ImagesService(md.image_store(), md.db, _publisher(ic))


async def _init_containers(ic: InitContext) -> GrpcService:
    from pycontainerd.metadata.services.containers import ContainersService

    return ContainersService(_metadata(ic).container_store(), _publisher(ic))


async def _init_leases(ic: InitContext) -> GrpcService:
    from pycontainerd.metadata.services.leases import LeasesService

    md = _metadata(ic)
    return LeasesService(md.lease_store(), md.db)


async def _init_sandbox_store(ic: InitContext) -> SandboxStore:
    return _metadata(ic).sandbox_store()


async def _init_sandboxes(ic: InitContext) -> GrpcService:
    from pycontainerd.metadata.sandboxes import SandboxStore
    from pycontainerd.metadata.services.sandboxes import SandboxStoreService

    return SandboxStoreService(ic.get_by_id(PluginType.SANDBOX_STORE, "local", SandboxStore))


async def _init_gc_scheduler(ic: InitContext) -> Scheduler:
    from pycontainerd.metadata.gc import Collector
    from pycontainerd.metadata.scheduler import Scheduler, SchedulerConfig

    config = SchedulerConfig.from_mapping(ic.config)
    md = _metadata(ic)
    scheduler = Scheduler(Collector(md.db, md.content_backend, md.snapshotters), config)
    scheduler.start()
    ic.exports.update(config.exports())
    return scheduler


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The metadata database, its four gRPC services and the GC scheduler."""
    services = (
        ("namespaces", _init_namespaces),
        ("images", _init_images),
        ("containers", _init_containers),
        ("leases", _init_leases),
    )
    return [
        Registration(
            type=PluginType.METADATA,
            id=PLUGIN_ID,
            requires=(PluginType.CONTENT, PluginType.SNAPSHOT),
            init=_init_metadata,
            config={POLICY_KEY: SHARED},
        ),
        Registration(
            type=PluginType.GC,
            id="scheduler",
            requires=(PluginType.METADATA,),
            init=_init_gc_scheduler,
            config=GC_DEFAULTS,
        ),
        *(
            Registration(
                type=PluginType.GRPC,
                id=name,
                requires=(PluginType.METADATA, PluginType.EVENT),
                init=init,
            )
            for name, init in services
        ),
        Registration(
            type=PluginType.SANDBOX_STORE,
            id="local",
            requires=(PluginType.METADATA,),
            init=_init_sandbox_store,
        ),
        Registration(
            type=PluginType.GRPC,
            id="sandboxes",
            requires=(PluginType.SANDBOX_STORE,),
            init=_init_sandboxes,
        ),
    ]
