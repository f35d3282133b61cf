"""``SnapshotsProxy``: the ``Snapshotter`` contract over a Snapshots gRPC service.

One proxy serves one snapshotter by name (``overlayfs``, ``native``...); the
name travels in every request, as in containerd's ``snapshots/proxy``. The
client's ``RemoteSnapshotter`` and the daemon's ``[proxy_plugins]`` of type
``snapshot`` (a snapshotter served by another process) both build on it;
failed calls come back as errdefs kinds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pycontainerd.api.convert import (
    field_mask,
    mount_from_proto,
    snapshot_info_from_proto,
    snapshot_info_to_proto,
)
from pycontainerd.api.errgrpc import rpc_errors
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2, snapshots_pb2_grpc
from pycontainerd.core.snapshots import Usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    import grpc.aio

    from pycontainerd.core.snapshots import Info
    from pycontainerd.core.types import Mount


class SnapshotsProxy:
    """A ``Snapshotter`` backed by a Snapshots service on ``channel``.

    Args:
        channel: an asyncio gRPC channel to the service.
        name: the snapshotter's name, sent in every request.
        options: per-call keyword arguments for the stub (``metadata``,
            ``timeout``), asked for on every call.
        owns_channel: :meth:`aclose` closes ``channel`` (a proxy plugin's own).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        name: str,
        options: Callable[[], dict[str, Any]] = dict,
        *,
        owns_channel: bool = False,
    ) -> None:
        self.name = name
        self._options = options
        self._stub = snapshots_pb2_grpc.SnapshotsStub(channel)
        self._channel = channel if owns_channel else None

    def _opts(self) -> dict[str, Any]:
        return self._options()

    async def stat(self, key: str) -> Info:
        with rpc_errors():
            resp = await self._stub.Stat(
                snapshots_pb2.StatSnapshotRequest(snapshotter=self.name, key=key), **self._opts()
            )
        return snapshot_info_from_proto(resp.info)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        req = snapshots_pb2.UpdateSnapshotRequest(
            snapshotter=self.name,
            info=snapshot_info_to_proto(info),
            update_mask=field_mask(fieldpaths),
        )
        with rpc_errors():
            resp = await self._stub.Update(req, **self._opts())
        return snapshot_info_from_proto(resp.info)

    async def usage(self, key: str) -> Usage:
        with rpc_errors():
            resp = await self._stub.Usage(
                snapshots_pb2.UsageRequest(snapshotter=self.name, key=key), **self._opts()
            )
        return Usage(inodes=resp.inodes, size=resp.size)

    async def mounts(self, key: str) -> list[Mount]:
        with rpc_errors():
            resp = await self._stub.Mounts(
                snapshots_pb2.MountsRequest(snapshotter=self.name, key=key), **self._opts()
            )
        return [mount_from_proto(m) for m in resp.mounts]

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        req = snapshots_pb2.PrepareSnapshotRequest(
            snapshotter=self.name, key=key, parent=parent, labels=dict(labels or {})
        )
        with rpc_errors():
            resp = await self._stub.Prepare(req, **self._opts())
        return [mount_from_proto(m) for m in resp.mounts]

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        req = snapshots_pb2.ViewSnapshotRequest(
            snapshotter=self.name, key=key, parent=parent, labels=dict(labels or {})
        )
        with rpc_errors():
            resp = await self._stub.View(req, **self._opts())
        return [mount_from_proto(m) for m in resp.mounts]

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        req = snapshots_pb2.CommitSnapshotRequest(
            snapshotter=self.name, name=name, key=key, labels=dict(labels or {})
        )
        with rpc_errors():
            await self._stub.Commit(req, **self._opts())

    async def remove(self, key: str) -> None:
        with rpc_errors():
            await self._stub.Remove(
                snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.name, key=key),
                **self._opts(),
            )

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        call = self._stub.List(
            snapshots_pb2.ListSnapshotsRequest(snapshotter=self.name, filters=list(filters)),
            metadata=self._opts().get("metadata"),
        )
        with rpc_errors():
            async for resp in call:
                for info in resp.info:
                    yield snapshot_info_from_proto(info)

    async def cleanup(self) -> None:
        """Ask the snapshotter to reclaim space of removed snapshots."""
        with rpc_errors():
            await self._stub.Cleanup(
                snapshots_pb2.CleanupRequest(snapshotter=self.name), **self._opts()
            )

    async def close(self) -> None:
        return None

    async def aclose(self) -> None:
        """Close the channel if this proxy owns it (the daemon calls this at shutdown)."""
        if self._channel is not None:
            await self._channel.close()
