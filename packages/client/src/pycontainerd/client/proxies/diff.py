"""``RemoteDiff``: apply and create layer diffs over the Diff service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.api.convert import descriptor_from_proto, descriptor_to_proto, mount_to_proto
from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from pycontainerd.client.proxies import Proxy

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pycontainerd.core.types import Descriptor, Mount


class RemoteDiff(Proxy["diff_pb2_grpc.DiffAsyncStub"]):
    """The daemon's Diff service (containerd's ``diff.Applier`` and ``diff.Comparer``)."""

    new_stub = diff_pb2_grpc.DiffStub

    async def apply(
        self, desc: Descriptor, mounts: Sequence[Mount], *, sync_fs: bool = False
    ) -> Descriptor:
        """Apply the layer ``desc`` onto ``mounts``; returns the uncompressed descriptor."""
        req = diff_pb2.ApplyRequest(
            diff=descriptor_to_proto(desc),
            mounts=[mount_to_proto(m) for m in mounts],
            sync_fs=sync_fs,
        )
        resp = await self._call(self._stub.Apply, req)
        return descriptor_from_proto(resp.applied)

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
    ) -> Descriptor:
        """Write the difference between ``lower`` and ``upper`` as a layer blob."""
        req = diff_pb2.DiffRequest(
            left=[mount_to_proto(m) for m in lower],
            right=[mount_to_proto(m) for m in upper],
            media_type=media_type,
            ref=ref,
            labels=dict(labels or {}),
        )
        resp = await self._call(self._stub.Diff, req)
        return descriptor_from_proto(resp.diff)
