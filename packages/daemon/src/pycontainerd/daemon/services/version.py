"""``containerd.services.version.v1.Version``: the daemon's version and revision."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc
from pycontainerd.daemon.version import revision, server_version

if TYPE_CHECKING:
    import grpc.aio
    from google.protobuf import empty_pb2


class VersionService(version_pb2_grpc.VersionServicer):
    """Answers ``Version`` with the API level, our version (build metadata) and revision."""

    def register(self, server: grpc.aio.Server) -> None:
        version_pb2_grpc.add_VersionServicer_to_server(self, server)

    async def Version(  # noqa: N802 - name fixed by the proto
        self,
        request: empty_pb2.Empty,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version=server_version(), revision=revision())
