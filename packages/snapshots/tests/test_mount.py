"""Mount option parsing, real mounts through ctypes, temporary mounts and their cleanup."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.types import Mount
from pycontainerd.snapshots import mount as mountlib

if TYPE_CHECKING:
    from pathlib import Path

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_parse_options_splits_flags_propagation_and_data() -> None:
    opts = mountlib.parse_options(
        ["ro", "nosuid", "rbind", "rprivate", "index=off", "lowerdir=/a:/b", "rw", "noexec"]
    )
    assert opts.flags == mountlib.MS_NOSUID | mountlib.MS_BIND | mountlib.MS_REC | (
        mountlib.MS_NOEXEC
    )
    assert opts.propagation == mountlib.MS_PRIVATE | mountlib.MS_REC
    assert opts.data == "index=off,lowerdir=/a:/b"


def test_read_only_turns_upper_into_lower() -> None:
    ro = mountlib.read_only(
        [
            Mount(
                type="overlay",
                source="overlay",
                options=("index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l1:/l2"),
            ),
            Mount(type="bind", source="/x", options=("rw", "rbind")),
        ]
    )
    assert ro[0].options == ("index=off", "lowerdir=/u:/l1:/l2")
    assert ro[1].options == ("rbind", "ro")


@needs_root
def test_read_only_bind_mount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "f").write_bytes(b"x")
    mountlib.mount(Mount(type="bind", source=str(src), options=("ro", "rbind")), dst)
    try:
        assert (dst / "f").read_bytes() == b"x"
        with pytest.raises(OSError, match="Read-only") as excinfo:
            (dst / "g").write_bytes(b"y")
        assert excinfo.value.errno == errno.EROFS
    finally:
        mountlib.unmount(dst)
    assert not (dst / "f").exists()


@needs_root
def test_failed_mount_raises_with_errno(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file") as excinfo:
        mountlib.mount(Mount(type="bind", source=str(tmp_path / "missing")), tmp_path)
    assert excinfo.value.errno == errno.ENOENT


@needs_root
def test_unmount_all_of_nothing_is_fine(tmp_path: Path) -> None:
    mountlib.unmount_all(tmp_path)


@needs_root
async def test_with_temp_mounts_and_clean_start(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    location = tmp_path / "tmpmounts"
    async with mountlib.with_temp_mounts(
        [Mount(type="bind", source=str(src), options=("rbind",))], location=location
    ) as target:
        assert (target / "f").read_bytes() == b"x"
        assert target.parent == location
    assert list(location.iterdir()) == []
    # a crash leaves a mount behind; the next start cleans it
    stale = location / "stale"
    stale.mkdir()
    mountlib.mount(Mount(type="bind", source=str(src), options=("rbind",)), stale)
    assert mountlib.clean_temp_mounts(location) == [str(stale)]
    assert not stale.exists()
    assert (src / "f").read_bytes() == b"x"


@needs_root
def test_overlay_with_many_long_lowerdirs_fits(tmp_path: Path) -> None:
    base = tmp_path / ("x" * 60) / "snapshots"
    lowers = []
    for i in range(128):
        d = base / str(i) / "fs"
        d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(b"")
        lowers.append(str(d))
    data = "lowerdir=" + ":".join(reversed(lowers))
    assert len(data) > mountlib.PAGE_SIZE
    target = tmp_path / "m"
    target.mkdir()
    mountlib.mount(Mount(type="overlay", source="overlay", options=("index=off", data)), target)
    try:
        assert len(os.listdir(target)) == 128
    finally:
        mountlib.unmount(target)
