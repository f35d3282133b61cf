"""The contracts: value types, enums and runtime-checkable protocols."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core import containers, content, events, images, leases, snapshots
from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError
from pycontainerd.core.types import UNSET_TIME, AnyValue, Descriptor, Mount, Platform

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from pathlib import Path


def test_value_types_are_frozen_and_keyword_only() -> None:
    d = Descriptor(media_type="m", digest="sha256:" + "0" * 64, size=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.size = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        Descriptor("m")  # type: ignore[call-arg]
    assert d.urls == ()
    assert d.platform is None
    assert not hasattr(d, "__dict__")  # slots


def test_descriptor_with_platform() -> None:
    d = Descriptor(platform=Platform(os="linux", architecture="amd64"))
    assert str(d.platform) == "linux/amd64"


def test_mount() -> None:
    m = Mount(type="overlay", source="overlay", options=("ro", "lowerdir=/a:/b"))
    assert m.read_only
    assert m.target == ""
    assert not Mount(type="bind", source="/x", options=("rbind", "rw")).read_only


def test_records_default_times_are_unset() -> None:
    assert images.Image(name="x").created_at == UNSET_TIME
    c = containers.Container(id="c", runtime=containers.RuntimeInfo(name="io.containerd.runc.v2"))
    assert c.updated_at == UNSET_TIME
    assert c.spec is None
    assert c.extensions == {}
    assert leases.Lease(id="l").labels == {}
    assert UNSET_TIME.year == 1970
    assert UNSET_TIME.utcoffset() is not None


def test_snapshot_kind_wire_values() -> None:
    assert [int(k) for k in snapshots.Kind] == [0, 1, 2, 3]
    assert snapshots.Kind(2) is snapshots.Kind.ACTIVE
    assert str(snapshots.Kind.COMMITTED) == "Committed"
    assert snapshots.Kind.parse("view") is snapshots.Kind.VIEW
    assert snapshots.Kind.parse("Active") is snapshots.Kind.ACTIVE


@pytest.mark.parametrize("text", ["unknown", "", "bogus"])
def test_snapshot_kind_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidArgumentError, match="unknown snapshot kind"):
        snapshots.Kind.parse(text)


def test_usage_adds() -> None:
    total = snapshots.Usage(inodes=1, size=10) + snapshots.Usage(inodes=2, size=5)
    assert total == snapshots.Usage(inodes=3, size=15)


# --- a tiny in-memory store proves the Protocols are implementable and checkable ----


class _Reader:
    def __init__(self, data: bytes, chunk: int) -> None:
        self.size = len(data)
        self._data = data
        self._chunk = chunk
        self.closed = False

    async def read_at(self, offset: int, size: int) -> bytes:
        return self._data[offset : offset + min(size, self._chunk)]

    async def close(self) -> None:
        self.closed = True


class _Blobs:
    def __init__(self, blobs: Mapping[str, bytes]) -> None:
        self.blobs = dict(blobs)
        self.readers: list[_Reader] = []

    async def reader_at(self, dgst: str) -> _Reader:
        if dgst not in self.blobs:
            raise NotFoundError(f"content digest {dgst}")
        reader = _Reader(self.blobs[dgst], chunk=3)
        self.readers.append(reader)
        return reader


async def test_read_blob_reads_everything_and_closes() -> None:
    provider = _Blobs({"d": b"hello world"})
    assert isinstance(provider, content.Provider)
    assert await content.read_blob(provider, "d") == b"hello world"
    assert provider.readers[0].closed
    with pytest.raises(NotFoundError):
        await content.read_blob(provider, "missing")


async def test_read_chunks_reads_from_an_offset_in_chunks_and_stops_at_a_short_blob() -> None:
    reader = _Reader(b"hello world", chunk=100)
    got = [c async for c in content.read_chunks(reader, 4, offset=1)]
    assert got == [b"ello", b" wor", b"ld"]
    reader.size = 20  # says more than it holds: the empty read ends it
    assert b"".join([c async for c in content.read_chunks(reader, 4)]) == b"hello world"


def test_protocols_reject_incomplete_objects() -> None:
    assert not isinstance(_Blobs({}), content.Store)
    assert not isinstance(object(), snapshots.Snapshotter)
    assert not isinstance(object(), images.Store)
    assert not isinstance(object(), containers.Store)
    assert not isinstance(object(), leases.Manager)
    assert not isinstance(object(), events.Publisher)


class _Publisher:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object]] = []

    async def publish(self, topic: str, event: object) -> None:
        self.seen.append((topic, event))


class _Subscriber:
    async def _gen(self) -> AsyncIterator[events.Envelope]:
        yield events.Envelope(
            timestamp=UNSET_TIME,
            namespace="default",
            topic="/tasks/exit",
            event=AnyValue(type_url="containerd.events.TaskExit"),
        )

    def subscribe(self, *filters: str) -> AsyncIterator[events.Envelope]:
        return self._gen()


async def test_event_protocols() -> None:
    pub = _Publisher()
    assert isinstance(pub, events.Publisher)
    await pub.publish("/x", object())
    sub = _Subscriber()
    assert isinstance(sub, events.Subscriber)
    got = [env.topic async for env in sub.subscribe()]
    assert got == ["/tasks/exit"]


def test_core_imports_no_grpc_or_protobuf(tmp_path: Path) -> None:
    modules = [
        "pycontainerd.core.plugin",
        "pycontainerd.core.filters",
        "pycontainerd.core.content",
        "pycontainerd.core.snapshots",
        "pycontainerd.core.images",
        "pycontainerd.core.containers",
        "pycontainerd.core.leases",
        "pycontainerd.core.events",
        "pycontainerd.core.namespaces",
        "pycontainerd.core.digests",
        "pycontainerd.core.platforms",
    ]
    probe = (
        f"import sys; import {', '.join(modules)}; "
        "print(','.join(m for m in ('grpc', 'google.protobuf', 'pycontainerd.daemon') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout.strip()
    assert out == ""
