"""``grpc.health.v1.Health`` (plugin ``io.containerd.grpc.v1.healthcheck``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grpc_health.v1 import (  # type: ignore[import-untyped]
    health,
    health_pb2,
    health_pb2_grpc,
)

if TYPE_CHECKING:
    import grpc.aio


class HealthService:
    """grpcio-health-checking's asyncio servicer, reporting SERVING for the whole server."""

    def __init__(self) -> None:
        self.servicer: Any = health.aio.HealthServicer()

    def register(self, server: grpc.aio.Server) -> None:
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)

    async def set_serving(self, *, serving: bool = True) -> None:
        """Report the overall server (service ``""``) as serving or not."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        await self.servicer.set("", status)

    async def aclose(self) -> None:
        await self.servicer.enter_graceful_shutdown()
