"""The native snapshotter against the conformance suite, plus its copy details."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import pytest

from pycontainerd.snapshots.native import NativeSnapshotter
from pycontainerd.snapshots.testing import SnapshotterSuite, mounted

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


class TestNative(SnapshotterSuite):
    @pytest.fixture
    async def snapshotter(self, tmp_path: Path) -> AsyncIterator[NativeSnapshotter]:
        sn = NativeSnapshotter(tmp_path / "native")
        yield sn
        await sn.close()


async def test_native_layout_and_mounts(tmp_path: Path) -> None:
    sn = NativeSnapshotter(tmp_path / "root")
    mounts = await sn.prepare("a")
    assert len(mounts) == 1
    assert mounts[0].type == "bind"
    assert mounts[0].options == ("rw", "rbind")
    assert mounts[0].source == str(tmp_path / "root" / "snapshots" / "1")
    await sn.commit("c", "a")
    view = await sn.view("v", "c")
    assert view[0].options == ("ro", "rbind")
    assert (tmp_path / "root" / "metadata.db").is_file()
    await sn.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")
async def test_sockets_are_skipped_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sn = NativeSnapshotter(tmp_path / "root")
    await sn.prepare("a")
    async with mounted(await sn.mounts("a")) as root:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(root / "sock"))
        s.close()
        (root / "file").write_bytes(b"x")
    await sn.commit("c", "a")
    with caplog.at_level("INFO"):
        await sn.prepare("b", "c")
    async with mounted(await sn.mounts("b")) as root:
        assert sorted(p.name for p in root.iterdir()) == ["file"]
    assert any("socket" in r.getMessage() for r in caplog.records)
    await sn.close()


async def test_cleanup_removes_orphans(tmp_path: Path) -> None:
    sn = NativeSnapshotter(tmp_path / "root")
    await sn.prepare("a")
    orphan = tmp_path / "root" / "snapshots" / "new-crashed"
    orphan.mkdir()
    (orphan / "f").write_bytes(b"x")
    await sn.cleanup()
    assert not orphan.exists()
    assert (tmp_path / "root" / "snapshots" / "1").is_dir()
    await sn.close()


async def test_closed_snapshotter_refuses(tmp_path: Path) -> None:
    from pycontainerd.core.errdefs import FailedPreconditionError

    sn = NativeSnapshotter(tmp_path / "root")
    await sn.close()
    with pytest.raises(FailedPreconditionError):
        await sn.stat("a")
