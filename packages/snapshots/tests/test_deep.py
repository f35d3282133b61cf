"""Trees 10 000 directories deep (``mkdir -p`` in a container makes them): nothing recurses.

Removal (snapshot removal and the cleanup garbage collection runs), the native
snapshotter's copy of a parent, the diff walk, whiteout and opaque removal,
disk usage and applying such a layer all work, and later removals still do.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.snapshots import fsutil
from pycontainerd.snapshots.archive import OverlayUpper, apply_chunks, apply_tar, write_diff
from pycontainerd.snapshots.native import NativeSnapshotter
from pycontainerd.snapshots.overlay import OverlaySnapshotter
from pycontainerd.snapshots.testing import make_tar, tar_entry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycontainerd.snapshots.base import DirSnapshotter

DEPTH = 10_000
pytestmark = pytest.mark.slow


def _remove_below(top: Path) -> None:
    """Remove what ``top`` holds without recursion (``shutil.rmtree`` would overflow)."""
    with contextlib.suppress(FileNotFoundError):
        for child in top.iterdir():
            if child.is_dir() and not child.is_symlink():
                fsutil.remove_tree(child)
            else:
                child.unlink()


@pytest.fixture(autouse=True)
def _no_deep_tree_left(tmp_path: Path) -> Iterator[None]:
    # pytest later deletes old temporary directories with shutil.rmtree, which
    # recurses: a 10 000-deep tree left here would make a later run fail
    # (RecursionError) while it cleans up.
    yield
    _remove_below(tmp_path)


def make_deep(top: Path, depth: int = DEPTH) -> None:
    """``top/d/d/.../d/leaf`` (``depth`` directories), made one level at a time."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", 0o755, dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"bottom")
        os.close(leaf)
    finally:
        os.close(fd)


def deep_depth(top: Path) -> tuple[int, bytes]:
    """How many ``d`` levels are below ``top``, and the leaf's contents."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    depth = 0
    try:
        while True:
            try:
                child = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                break
            os.close(fd)
            fd = child
            depth += 1
        leaf = os.open("leaf", os.O_RDONLY, dir_fd=fd)
        data = os.read(leaf, 100)
        os.close(leaf)
    finally:
        os.close(fd)
    return depth, data


def test_remove_tree_and_usage(tmp_path: Path) -> None:
    top = tmp_path / "top"
    top.mkdir()
    make_deep(top)
    usage = fsutil.disk_usage(top)
    assert usage.inodes == DEPTH + 2
    fsutil.remove_tree(top)
    assert not top.exists()


def test_copy_tree(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    make_deep(src)
    fsutil.copy_tree(src, dst)
    assert deep_depth(dst) == (DEPTH, b"bottom")


def test_diff_walk_and_apply(tmp_path: Path) -> None:
    lower, upper, out = tmp_path / "lower", tmp_path / "upper", tmp_path / "out"
    for d in (lower, upper, out):
        d.mkdir()
    make_deep(upper)
    buf = io.BytesIO()
    write_diff(buf, lower, upper)
    layer = buf.getvalue()
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        names = tar.getnames()
    assert len(names) == DEPTH + 1
    assert names[-1] == "d/" * DEPTH + "leaf"
    apply_tar(io.BytesIO(layer), out)
    assert deep_depth(out) == (DEPTH, b"bottom")


def test_whiteout_and_opaque_removal(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "w").mkdir(parents=True)
    (root / "o").mkdir()
    make_deep(root / "w")
    make_deep(root / "o")
    layer = make_tar(tar_entry("w/.wh.d"), tar_entry("o/.wh..wh..opq"))
    apply_tar(io.BytesIO(layer), root)
    assert os.listdir(root / "w") == []
    assert os.listdir(root / "o") == []


def test_overlay_upper_whiteout_of_a_deep_directory(tmp_path: Path, needs_root: None) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    lower.mkdir()
    (upper / "w").mkdir(parents=True)
    make_deep(upper / "w")
    apply_chunks([make_tar(tar_entry("w/.wh.d"))], upper, overlay=OverlayUpper((str(lower),)))
    assert os.major(os.lstat(upper / "w" / "d").st_rdev) == 0


@pytest.mark.parametrize("kind", ["native", "overlayfs"])
async def test_snapshot_removal_and_cleanup(tmp_path: Path, kind: str, needs_root: None) -> None:
    sn: DirSnapshotter = (NativeSnapshotter if kind == "native" else OverlaySnapshotter)(
        tmp_path / "sn"
    )
    try:
        await sn.prepare("base", "")
        data = tmp_path / "sn" / "snapshots" / "1"
        make_deep(data if kind == "native" else data / "fs")
        await sn.commit("base-c", "base")
        if kind == "native":  # a child copies the deep parent
            await sn.prepare("child", "base-c")
            assert deep_depth(tmp_path / "sn" / "snapshots" / "2") == (DEPTH, b"bottom")
            await sn.remove("child")
        await sn.remove("base-c")
        # a directory left for cleanup (as after a crash) goes too, and later ones after it
        leftover = tmp_path / "sn" / "snapshots" / "rm-99"
        leftover.mkdir()
        make_deep(leftover)
        await sn.prepare("later", "")
        await sn.remove("later")
        await sn.cleanup()
        assert sorted(os.listdir(tmp_path / "sn" / "snapshots")) == []
    finally:
        await sn.close()


@pytest.mark.system
def test_daemon_garbage_collection_after_a_deep_snapshot(tmp_path: Path, needs_root: None) -> None:
    """The issue's report: removing one deep snapshot must not break every later collection."""
    testing = pytest.importorskip("pycontainerd.daemon.testing")
    testing.require_binary("/usr/bin/ctr")
    modules = (
        "pycontainerd.daemon.plugin",
        "pycontainerd.content.plugin",
        "pycontainerd.events.plugin",
        "pycontainerd.metadata.plugin",
        "pycontainerd.snapshots.plugin",
    )
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="deep-gc-"))
    daemon = testing.Daemon(base, env=testing.daemon_env(modules))
    snapshots = base / "root" / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
    try:
        daemon.start()
        for key, deep in (("deep", True), ("after", False)):
            daemon.ctr("snapshots", "prepare", key, "")
            (found,) = [p for p in snapshots.iterdir() if not p.name.startswith(("new-", "rm-"))]
            if deep:
                make_deep(found / "fs")
            daemon.ctr("snapshots", "rm", key)
            testing.wait_for(lambda: not any(snapshots.iterdir()), timeout=120, what="cleanup")
        assert "garbage collection failed" not in daemon.log()
    finally:
        daemon.kill()
        with contextlib.suppress(OSError):  # as rmtree(ignore_errors=True) did, without recursion
            _remove_below(base)
            base.rmdir()
