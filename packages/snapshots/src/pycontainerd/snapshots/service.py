"""The Snapshots and Diff gRPC services.

They serve ``containerd.services.snapshots.v1.Snapshots`` and
``containerd.services.diff.v1.Diff``.

Thin servicers: each RPC makes the call's ``containerd-namespace`` and
``containerd-lease`` headers current, calls the (namespaced) snapshotter or
the differs, and maps errdefs errors to status codes at one edge. The
Snapshots service publishes ``/snapshot/prepare``, ``/snapshot/commit`` and
``/snapshot/remove`` after each successful change.

This module is an edge: it imports grpc and the generated code.
"""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import empty_pb2

from pycontainerd.api.convert import (
    descriptor_from_proto,
    descriptor_to_proto,
    mount_from_proto,
    mount_to_proto,
    snapshot_info_from_proto,
    snapshot_info_to_proto,
)
from pycontainerd.api.errgrpc import aborting_on_error, unary_rpc
from pycontainerd.api.events import snapshot_pb2 as events_pb2
from pycontainerd.api.grpcutil import CallScope, request_scope
from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc
from pycontainerd.core.errdefs import InvalidArgumentError, UnimplementedError
from pycontainerd.core.snapshots import Cleaner, Snapshotter

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence

    import grpc
    from google.protobuf import message

    from pycontainerd.api.types import mount_pb2
    from pycontainerd.core.events import Publisher
    from pycontainerd.core.types import Mount
    from pycontainerd.snapshots.differ import WalkingDiffer

__all__ = ["DiffService", "SnapshotsService"]

#: Infos per ListSnapshotsResponse message.
LIST_BATCH: Final = 100


def mounts_to_proto(mounts: Sequence[Mount]) -> list[mount_pb2.Mount]:
    """Domain mounts -> wire mounts."""
    return [mount_to_proto(m) for m in mounts]


def mounts_from_proto(mounts: Sequence[mount_pb2.Mount]) -> list[Mount]:
    """Wire mounts -> domain mounts."""
    return [mount_from_proto(m) for m in mounts]


class SnapshotsService(snapshots_pb2_grpc.SnapshotsServicer):
    """Serves ``containerd.services.snapshots.v1.Snapshots`` from namespaced snapshotters."""

    def __init__(
        self, snapshotters: Mapping[str, Snapshotter], publisher: Publisher | None = None
    ) -> None:
        self._snapshotters = dict(snapshotters)
        self._publisher = publisher

    def register(self, server: grpc.aio.Server) -> None:
        """Attach the servicer to ``server``."""
        snapshots_pb2_grpc.add_SnapshotsServicer_to_server(self, server)

    def _get(self, name: str) -> Snapshotter:
        if not name:
            msg = "snapshotter argument missing"
            raise InvalidArgumentError(msg)
        sn = self._snapshotters.get(name)
        if sn is None:
            msg = f"snapshotter not loaded: {name}"
            raise InvalidArgumentError(msg)
        return sn

    async def _publish(self, topic: str, event: message.Message) -> None:
        if self._publisher is not None:
            await self._publisher.publish(topic, event)

    @unary_rpc
    async def Prepare(  # noqa: N802 - name fixed by the proto
        self, request: pb.PrepareSnapshotRequest, context: Any
    ) -> pb.PrepareSnapshotResponse:
        mounts = await self._get(request.snapshotter).prepare(
            request.key, request.parent, labels=dict(request.labels)
        )
        await self._publish(
            "/snapshot/prepare",
            events_pb2.SnapshotPrepare(
                key=request.key, parent=request.parent, snapshotter=request.snapshotter
            ),
        )
        return pb.PrepareSnapshotResponse(mounts=mounts_to_proto(mounts))

    @unary_rpc
    async def View(  # noqa: N802
        self, request: pb.ViewSnapshotRequest, context: Any
    ) -> pb.ViewSnapshotResponse:
        mounts = await self._get(request.snapshotter).view(
            request.key, request.parent, labels=dict(request.labels)
        )
        return pb.ViewSnapshotResponse(mounts=mounts_to_proto(mounts))

    @unary_rpc
    async def Mounts(  # noqa: N802
        self, request: pb.MountsRequest, context: Any
    ) -> pb.MountsResponse:
        mounts = await self._get(request.snapshotter).mounts(request.key)
        return pb.MountsResponse(mounts=mounts_to_proto(mounts))

    @unary_rpc
    async def Commit(  # noqa: N802
        self, request: pb.CommitSnapshotRequest, context: Any
    ) -> empty_pb2.Empty:
        await self._get(request.snapshotter).commit(
            request.name, request.key, labels=dict(request.labels) or None
        )
        await self._publish(
            "/snapshot/commit",
            events_pb2.SnapshotCommit(
                key=request.key, name=request.name, snapshotter=request.snapshotter
            ),
        )
        return empty_pb2.Empty()

    @unary_rpc
    async def Remove(  # noqa: N802
        self, request: pb.RemoveSnapshotRequest, context: Any
    ) -> empty_pb2.Empty:
        await self._get(request.snapshotter).remove(request.key)
        await self._publish(
            "/snapshot/remove",
            events_pb2.SnapshotRemove(key=request.key, snapshotter=request.snapshotter),
        )
        return empty_pb2.Empty()

    @unary_rpc
    async def Stat(  # noqa: N802
        self, request: pb.StatSnapshotRequest, context: Any
    ) -> pb.StatSnapshotResponse:
        info = await self._get(request.snapshotter).stat(request.key)
        return pb.StatSnapshotResponse(info=snapshot_info_to_proto(info))

    @unary_rpc
    async def Update(  # noqa: N802
        self, request: pb.UpdateSnapshotRequest, context: Any
    ) -> pb.UpdateSnapshotResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        info = await self._get(request.snapshotter).update(
            snapshot_info_from_proto(request.info), *paths
        )
        return pb.UpdateSnapshotResponse(info=snapshot_info_to_proto(info))

    async def List(  # noqa: N802
        self, request: pb.ListSnapshotsRequest, context: Any
    ) -> AsyncIterator[pb.ListSnapshotsResponse]:
        batch: list[pb.Info] = []
        async with aborting_on_error(context):
            with request_scope(context):
                walk = self._get(request.snapshotter).walk(*request.filters)
            async for info in CallScope.of(context).iterate(walk):
                batch.append(snapshot_info_to_proto(info))
                if len(batch) >= LIST_BATCH:
                    yield pb.ListSnapshotsResponse(info=batch)
                    batch = []
        if batch:
            yield pb.ListSnapshotsResponse(info=batch)

    @unary_rpc
    async def Usage(  # noqa: N802
        self, request: pb.UsageRequest, context: Any
    ) -> pb.UsageResponse:
        usage = await self._get(request.snapshotter).usage(request.key)
        return pb.UsageResponse(size=usage.size, inodes=usage.inodes)

    @unary_rpc
    async def Cleanup(  # noqa: N802
        self, request: pb.CleanupRequest, context: Any
    ) -> empty_pb2.Empty:
        sn = self._get(request.snapshotter)
        if not isinstance(sn, Cleaner):
            msg = "snapshotter does not implement cleanup"
            raise UnimplementedError(msg)
        await sn.cleanup()
        return empty_pb2.Empty()


class DiffService(diff_pb2_grpc.DiffServicer):
    """Serves ``containerd.services.diff.v1.Diff`` from an ordered list of differs."""

    def __init__(self, differs: Sequence[WalkingDiffer]) -> None:
        self._differs = list(differs)

    def register(self, server: grpc.aio.Server) -> None:
        """Attach the servicer to ``server``."""
        diff_pb2_grpc.add_DiffServicer_to_server(self, server)

    @unary_rpc
    async def Apply(  # noqa: N802
        self, request: diff_pb2.ApplyRequest, context: Any
    ) -> diff_pb2.ApplyResponse:
        desc = descriptor_from_proto(request.diff)
        mounts = mounts_from_proto(request.mounts)
        applied = None
        for differ in self._differs:
            try:
                applied = await differ.apply(
                    desc, mounts, sync_fs=request.sync_fs, payloads=dict(request.payloads)
                )
                break
            except UnimplementedError:
                if differ is self._differs[-1]:
                    raise
        if applied is None:
            raise UnimplementedError
        return diff_pb2.ApplyResponse(applied=descriptor_to_proto(applied))

    @unary_rpc
    async def Diff(  # noqa: N802
        self, request: diff_pb2.DiffRequest, context: Any
    ) -> diff_pb2.DiffResponse:
        epoch = (
            request.source_date_epoch.ToDatetime(tzinfo=UTC)
            if request.HasField("source_date_epoch")
            else None
        )
        desc = None
        for differ in self._differs:
            try:
                desc = await differ.compare(
                    mounts_from_proto(request.left),
                    mounts_from_proto(request.right),
                    media_type=request.media_type,
                    ref=request.ref,
                    labels=dict(request.labels),
                    source_date_epoch=epoch,
                )
                break
            except UnimplementedError:
                if differ is self._differs[-1]:
                    raise
        if desc is None:
            raise UnimplementedError
        return diff_pb2.DiffResponse(diff=descriptor_to_proto(desc))
