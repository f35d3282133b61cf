"""``mount(8)`` option parsing and the raw ``mount(2)``/``umount2(2)`` wrappers."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core import mount as m

if TYPE_CHECKING:
    from pathlib import Path

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_flags_set_and_clear_in_order() -> None:
    opts = m.parse_options(["ro", "nosuid", "rw", "noexec", "defaults"])
    assert opts.flags == m.MS_NOSUID | m.MS_NOEXEC
    assert opts.propagation == 0
    assert opts.data == ""


def test_rbind_propagation_and_data() -> None:
    opts = m.parse_options(["rbind", "index=off", "rslave", "lowerdir=/a:/b", "runbindable"])
    assert opts.flags == m.MS_BIND | m.MS_REC
    assert opts.propagation == m.MS_UNBINDABLE | m.MS_REC  # the last one wins
    assert opts.data == "index=off,lowerdir=/a:/b"


@needs_root
def test_sys_mount_failure_carries_errno_and_names_the_call(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(OSError, match="No such file") as excinfo:
        m.sys_mount(missing, str(tmp_path), "none", m.MS_BIND, "")
    assert excinfo.value.errno == errno.ENOENT
    assert missing in str(excinfo.value)


@needs_root
def test_bind_mount_and_umount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "f").write_bytes(b"x")
    m.sys_mount(str(src), str(dst), "", m.MS_BIND, "")
    try:
        assert (dst / "f").read_bytes() == b"x"
    finally:
        m.sys_umount(str(dst), m.UMOUNT_NOFOLLOW)
    assert not (dst / "f").exists()
    with pytest.raises(OSError, match="Invalid argument") as excinfo:  # nothing mounted there
        m.sys_umount(str(dst), 0)
    assert excinfo.value.errno == errno.EINVAL
