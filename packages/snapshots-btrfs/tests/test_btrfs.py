"""The btrfs snapshotter on a loop-mounted btrfs image the test creates."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.plugin import SkipPluginError
from pycontainerd.snapshots.testing import SnapshotterSuite
from pycontainerd.snapshots_btrfs.btrfs import BtrfsSnapshotter, check_btrfs, is_subvolume

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path


def _missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def btrfs_mount() -> Iterator[str]:
    if os.geteuid() != 0:
        _missing("loop-mounting btrfs needs root")
    for tool in ("mkfs.btrfs", "btrfs", "losetup", "mount", "umount"):
        if shutil.which(tool) is None:
            _missing(f"{tool} is not installed")
    work = tempfile.mkdtemp(prefix="btrfs-test-", dir="/tmp")
    image = os.path.join(work, "fs.img")
    point = os.path.join(work, "mnt")
    os.mkdir(point)
    with open(image, "wb") as f:
        f.truncate(512 << 20)
    subprocess.run(["mkfs.btrfs", "-q", image], check=True, capture_output=True)
    device = subprocess.run(
        ["losetup", "--find", "--show", image], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mount", "-t", "btrfs", device, point], check=True, capture_output=True)
        try:
            yield point
        finally:
            subprocess.run(["umount", point], check=True, capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=False, capture_output=True)
        shutil.rmtree(work)


@pytest.fixture
def btrfs_root(btrfs_mount: str, request: pytest.FixtureRequest) -> str:
    return os.path.join(btrfs_mount, f"root-{abs(hash(request.node.nodeid))}")


class TestBtrfs(SnapshotterSuite):
    @pytest.fixture
    async def snapshotter(self, btrfs_root: str) -> AsyncIterator[BtrfsSnapshotter]:
        sn = BtrfsSnapshotter(btrfs_root)
        yield sn
        await sn.close()


async def test_snapshots_are_subvolumes_with_btrfs_mounts(btrfs_root: str) -> None:
    sn = BtrfsSnapshotter(btrfs_root)
    mounts = await sn.prepare("a")
    assert mounts[0].type == "btrfs"
    assert mounts[0].source == sn.device
    assert mounts[0].options[0].startswith("subvolid=")
    assert mounts[0].options[1] == "rw"
    assert is_subvolume(sn.snapshot_dir("1"))
    await sn.commit("c", "a")
    with pytest.raises(OSError, match="Read-only"):
        (sn.snapshot_dir("1") / "x").write_bytes(b"")
    await sn.view("v", "c")
    await sn.remove("v")
    await sn.cleanup()
    assert sorted(p.name for p in sn.snapshots_dir.iterdir()) == ["1"]
    await sn.close()


def test_not_btrfs_skips(tmp_path: Path) -> None:
    with pytest.raises(SkipPluginError, match="must be a btrfs filesystem"):
        check_btrfs(tmp_path / "root")
    with pytest.raises(SkipPluginError, match="skip plugin"):
        BtrfsSnapshotter(tmp_path / "root")
