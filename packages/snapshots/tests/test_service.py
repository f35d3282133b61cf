"""Snapshots and Diff services through a real grpc.aio server on a unix socket."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pycontainerd.api.events import snapshot_pb2 as events_pb2
from pycontainerd.api.services.diff.v1 import diff_pb2, diff_pb2_grpc
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2 as pb
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2_grpc
from pycontainerd.api.types import mount_pb2
from pycontainerd.events.exchange import Exchange
from pycontainerd.snapshots.differ import WalkingDiffer
from pycontainerd.snapshots.native import NativeSnapshotter
from pycontainerd.snapshots.service import DiffService, SnapshotsService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from pycontainerd.core.content import Store

MD = (("containerd-namespace", "test"),)


@pytest.fixture
async def channel(tmp_path: Path, store: Store) -> AsyncIterator[tuple[grpc.aio.Channel, Exchange]]:
    sock_dir = tempfile.mkdtemp(dir="/tmp")
    exchange = Exchange()
    sn = NativeSnapshotter(tmp_path / "native")
    server = grpc.aio.server()
    SnapshotsService({"native": sn}, exchange).register(server)
    DiffService([WalkingDiffer(store, temp_location=tmp_path / "tmpmounts")]).register(server)
    address = f"unix://{sock_dir}/s.sock"
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as ch:
            yield ch, exchange
    finally:
        await server.stop(None)
        await sn.close()
        shutil.rmtree(sock_dir)


async def test_snapshot_rpcs_round_trip(channel: tuple[grpc.aio.Channel, Exchange]) -> None:
    ch, exchange = channel
    stub = snapshots_pb2_grpc.SnapshotsStub(ch)
    sub = exchange.subscribe('topic~="^/snapshot/"')
    prep = await stub.Prepare(
        pb.PrepareSnapshotRequest(snapshotter="native", key="a", labels={"x": "1"}), metadata=MD
    )
    assert prep.mounts[0].type == "bind"
    assert list(prep.mounts[0].options) == ["rw", "rbind"]
    mounts = await stub.Mounts(pb.MountsRequest(snapshotter="native", key="a"), metadata=MD)
    assert mounts.mounts == prep.mounts
    await stub.Commit(
        pb.CommitSnapshotRequest(snapshotter="native", name="c", key="a"), metadata=MD
    )
    view = await stub.View(
        pb.ViewSnapshotRequest(snapshotter="native", key="v", parent="c"), metadata=MD
    )
    assert list(view.mounts[0].options) == ["ro", "rbind"]
    stat = await stub.Stat(pb.StatSnapshotRequest(snapshotter="native", key="c"), metadata=MD)
    assert (stat.info.name, stat.info.kind, dict(stat.info.labels)) == (
        "c",
        pb.COMMITTED,
        {"x": "1"},
    )
    upd = await stub.Update(
        pb.UpdateSnapshotRequest(
            snapshotter="native",
            info=pb.Info(name="c", labels={"y": "2"}),
            update_mask=field_mask_pb2.FieldMask(paths=["labels.y"]),
        ),
        metadata=MD,
    )
    assert dict(upd.info.labels) == {"x": "1", "y": "2"}
    listed = [
        i.name
        async for r in stub.List(
            pb.ListSnapshotsRequest(snapshotter="native", filters=["kind==view"]), metadata=MD
        )
        for i in r.info
    ]
    assert listed == ["v"]
    usage = await stub.Usage(pb.UsageRequest(snapshotter="native", key="c"), metadata=MD)
    assert usage.inodes >= 1
    await stub.Remove(pb.RemoveSnapshotRequest(snapshotter="native", key="v"), metadata=MD)
    await stub.Cleanup(pb.CleanupRequest(snapshotter="native"), metadata=MD)
    topics = []
    for _ in range(3):
        env = await asyncio.wait_for(sub.__anext__(), 5)
        topics.append((env.topic, env.namespace))
        if env.topic == "/snapshot/commit":
            assert env.event.type_url == "containerd.events.SnapshotCommit"
            ev = events_pb2.SnapshotCommit.FromString(env.event.value)
            assert (ev.key, ev.name, ev.snapshotter) == ("a", "c", "native")
    assert topics == [
        ("/snapshot/prepare", "test"),
        ("/snapshot/commit", "test"),
        ("/snapshot/remove", "test"),
    ]
    sub.close()


async def test_snapshot_errors_map_to_codes(channel: tuple[grpc.aio.Channel, Exchange]) -> None:
    ch, _ = channel
    stub = snapshots_pb2_grpc.SnapshotsStub(ch)
    cases = [
        (
            stub.Stat(pb.StatSnapshotRequest(snapshotter="native", key="nope"), metadata=MD),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            stub.Stat(pb.StatSnapshotRequest(snapshotter="", key="x"), metadata=MD),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            stub.Stat(pb.StatSnapshotRequest(snapshotter="zfs", key="x"), metadata=MD),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for call, code in cases:
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call
        assert excinfo.value.code() is code
    await stub.Prepare(pb.PrepareSnapshotRequest(snapshotter="native", key="a"), metadata=MD)
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Prepare(pb.PrepareSnapshotRequest(snapshotter="native", key="a"), metadata=MD)
    assert excinfo.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert (excinfo.value.details() or "").endswith(": already exists")
    await stub.Commit(
        pb.CommitSnapshotRequest(snapshotter="native", name="c", key="a"), metadata=MD
    )
    await stub.Prepare(
        pb.PrepareSnapshotRequest(snapshotter="native", key="child", parent="c"), metadata=MD
    )
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Remove(pb.RemoveSnapshotRequest(snapshotter="native", key="c"), metadata=MD)
    assert excinfo.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Mounts(pb.MountsRequest(snapshotter="native", key="c"), metadata=MD)
    assert excinfo.value.code() is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.usefixtures("needs_root")
async def test_diff_service_diff_then_apply(
    channel: tuple[grpc.aio.Channel, Exchange], tmp_path: Path
) -> None:
    ch, _ = channel
    diff = diff_pb2_grpc.DiffStub(ch)
    lower, upper, out = tmp_path / "lower", tmp_path / "upper", tmp_path / "out"
    for d in (lower, upper, out):
        d.mkdir()
    (upper / "hello").write_bytes(b"world")

    def bind(p: Path, flag: str) -> list[mount_pb2.Mount]:
        return [mount_pb2.Mount(type="bind", source=str(p), options=[flag, "rbind"])]

    made = await diff.Diff(
        diff_pb2.DiffRequest(left=bind(lower, "ro"), right=bind(upper, "ro"), labels={"a": "b"}),
        metadata=MD,
    )
    assert made.diff.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    applied = await diff.Apply(
        diff_pb2.ApplyRequest(diff=made.diff, mounts=bind(out, "rw")), metadata=MD
    )
    assert applied.applied.digest.startswith("sha256:")
    assert (out / "hello").read_bytes() == b"world"
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await diff.Apply(
            diff_pb2.ApplyRequest(
                diff=type(made.diff)(media_type="text/plain", digest=made.diff.digest),
                mounts=bind(out, "rw"),
            ),
            metadata=MD,
        )
    assert excinfo.value.code() is grpc.StatusCode.UNIMPLEMENTED
