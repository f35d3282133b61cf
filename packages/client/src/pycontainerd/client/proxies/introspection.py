"""``RemoteIntrospection``: plugins and server information over the Introspection service."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf import empty_pb2

from pycontainerd.api.convert import platform_from_proto, time_from_proto
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.client.proxies import Proxy

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime

    from pycontainerd.core.platforms import Platform


@dataclass(frozen=True, slots=True, kw_only=True)
class InitError:
    """Why a plugin did not load: a gRPC status code number and message."""

    code: int
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginInfo:
    """One plugin as ``Introspection.Plugins`` describes it."""

    type: str
    id: str
    requires: tuple[str, ...] = ()
    platforms: tuple[Platform, ...] = ()
    exports: Mapping[str, str] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    init_err: InitError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Deprecation:
    """One deprecated feature the daemon saw in use (1.7+)."""

    id: str
    message: str
    last_occurrence: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerInfo:
    """What ``Introspection.Server`` answers (1.6 fills only ``uuid``)."""

    uuid: str
    pid: int = 0
    pidns: int = 0
    deprecations: tuple[Deprecation, ...] = ()


class RemoteIntrospection(Proxy["introspection_pb2_grpc.IntrospectionAsyncStub"]):
    """The daemon's Introspection service."""

    new_stub = introspection_pb2_grpc.IntrospectionStub

    async def plugins(self, *filters: str) -> builtins.list[PluginInfo]:
        """Plugins matching any of ``filters`` (fields ``type``, ``id``), in load order."""
        resp = await self._call(
            self._stub.Plugins, introspection_pb2.PluginsRequest(filters=builtins.list(filters))
        )
        return [
            PluginInfo(
                type=p.type,
                id=p.id,
                requires=tuple(p.requires),
                platforms=tuple(platform_from_proto(x) for x in p.platforms),
                exports=dict(p.exports),
                capabilities=tuple(p.capabilities),
                init_err=(
                    InitError(code=p.init_err.code, message=p.init_err.message)
                    if p.HasField("init_err")
                    else None
                ),
            )
            for p in resp.plugins
        ]

    async def server(self) -> ServerInfo:
        """The daemon's UUID and, from 1.7, pid, pid namespace and deprecations."""
        resp = await self._call(self._stub.Server, empty_pb2.Empty())
        return ServerInfo(
            uuid=resp.uuid,
            pid=resp.pid,
            pidns=resp.pidns,
            deprecations=tuple(
                Deprecation(
                    id=d.id, message=d.message, last_occurrence=time_from_proto(d.last_occurrence)
                )
                for d in resp.deprecations
            ),
        )
