"""The overlayfs snapshotter against the conformance suite, plus its mount shapes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.plugin import SkipPluginError
from pycontainerd.snapshots.overlay import OverlaySnapshotter, check_overlay_support
from pycontainerd.snapshots.testing import SnapshotterSuite

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path


def _require_overlay(root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("overlay mounts need root")
    try:
        check_overlay_support(root)
    except SkipPluginError as exc:
        pytest.skip(str(exc))


class TestOverlay(SnapshotterSuite):
    @pytest.fixture
    async def snapshotter(self, tmp_path: Path) -> AsyncIterator[OverlaySnapshotter]:
        _require_overlay(tmp_path)
        sn = OverlaySnapshotter(tmp_path / "overlayfs")
        yield sn
        await sn.close()


async def test_mount_shapes(tmp_path: Path) -> None:
    sn = OverlaySnapshotter(tmp_path / "root")
    snaps = tmp_path / "root" / "snapshots"
    first = await sn.prepare("a")
    assert [(m.type, m.source, m.options) for m in first] == [
        ("bind", str(snaps / "1" / "fs"), ("rw", "rbind"))
    ]
    assert (snaps / "1" / "work").is_dir()
    await sn.commit("c1", "a")
    single_view = await sn.view("v1", "c1")
    assert [(m.type, m.source, m.options) for m in single_view] == [
        ("bind", str(snaps / "1" / "fs"), ("ro", "rbind"))
    ]
    assert not (snaps / "2" / "work").exists()
    active = await sn.prepare("b", "c1")
    assert active[0].type == "overlay"
    assert active[0].options == (
        "index=off",
        f"workdir={snaps / '3' / 'work'}",
        f"upperdir={snaps / '3' / 'fs'}",
        f"lowerdir={snaps / '1' / 'fs'}",
    )
    await sn.commit("c2", "b")
    multi_view = await sn.view("v2", "c2")
    assert multi_view[0].options == (
        "index=off",
        f"lowerdir={snaps / '3' / 'fs'}:{snaps / '1' / 'fs'}",
    )
    await sn.close()


def test_unsupported_root_skips(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount")
    from pycontainerd.core.types import Mount
    from pycontainerd.snapshots import mount as mountlib

    _require_overlay(tmp_path)
    # An overlay cannot be the upper directory of another overlay.
    for name in ("l", "u", "w", "m"):
        (tmp_path / name).mkdir()
    mountlib.mount(
        Mount(
            type="overlay",
            source="overlay",
            options=(
                f"lowerdir={tmp_path / 'l'}",
                f"upperdir={tmp_path / 'u'}",
                f"workdir={tmp_path / 'w'}",
            ),
        ),
        tmp_path / "m",
    )
    try:
        with pytest.raises(SkipPluginError, match="overlayfs cannot be used on"):
            check_overlay_support(tmp_path / "m" / "root")
    finally:
        mountlib.unmount(tmp_path / "m")
