"""The native snapshotter against the conformance suite, plus its copy details."""

from __future__ import annotations

import os
import socket
import stat
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
async def test_socket_nodes_are_copied_and_only_files_stay_hard_linked(tmp_path: Path) -> None:
    """As continuity's copy: a socket node is recreated; hard-linked symlinks are copied apart."""
    sn = NativeSnapshotter(tmp_path / "root")
    await sn.prepare("a")
    async with mounted(await sn.mounts("a")) as root:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(root / "sock"))
        s.close()
        (root / "file").write_bytes(b"x")
        os.link(root / "file", root / "file2")
        os.symlink("file", root / "sym")
        os.link(root / "sym", root / "sym2", follow_symlinks=False)
    await sn.commit("c", "a")
    await sn.prepare("b", "c")
    async with mounted(await sn.mounts("b")) as root:
        assert sorted(p.name for p in root.iterdir()) == ["file", "file2", "sock", "sym", "sym2"]
        assert stat.S_ISSOCK(os.lstat(root / "sock").st_mode)
        assert os.lstat(root / "file").st_ino == os.lstat(root / "file2").st_ino
        assert os.lstat(root / "sym").st_ino != os.lstat(root / "sym2").st_ino
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
