"""Mounting a snapshot's mounts on the client's host (containerd's ``mount.All``/``UnmountAll``).

``ctr images mount`` runs on the daemon's machine and mounts what the
snapshotter returns (``overlay`` with ``lowerdir=…``, ``bind`` with
``rbind``…) at a directory. This is the client side of that: mount(2) and
umount2(2) through libc, with containerd's option parsing (flags such as
``ro``/``nosuid``/``rbind`` become mount flags, the rest the data string).
Linux only, and normally root only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pycontainerd.core.types import Mount

MS_RDONLY: Final = 0x1
MS_NOSUID: Final = 0x2
MS_NODEV: Final = 0x4
MS_NOEXEC: Final = 0x8
MS_SYNCHRONOUS: Final = 0x10
MS_REMOUNT: Final = 0x20
MS_MANDLOCK: Final = 0x40
MS_DIRSYNC: Final = 0x80
MS_NOATIME: Final = 0x400
MS_NODIRATIME: Final = 0x800
MS_BIND: Final = 0x1000
MS_REC: Final = 0x4000
MS_PRIVATE: Final = 0x40000
MS_SLAVE: Final = 0x80000
MS_SHARED: Final = 0x100000
MS_RELATIME: Final = 0x200000
MS_STRICTATIME: Final = 0x1000000
MNT_DETACH: Final = 0x2
UMOUNT_NOFOLLOW: Final = 0x8

#: option -> (clear, flag): containerd's table.
_FLAGS: Final[dict[str, tuple[bool, int]]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
}
_PROPAGATION: Final[dict[str, int]] = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
}


def parse_options(options: Iterable[str]) -> tuple[int, int, str]:
    """``(flags, propagation flags, data)`` for mount(2) from ``mount(8)`` options."""
    flags = propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            clear, flag = _FLAGS[opt]
            flags = flags & ~flag if clear else flags | flag
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        msg = f"{what}: {os.strerror(err)}"
        if err in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
            raise InvalidArgumentError(msg)
        raise FailedPreconditionError(msg)


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    rc = _libc().mount(
        source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags), data.encode()
    )
    _check(rc, f"mount {source} on {target} ({fstype})")


def mount(m: Mount, target: str) -> None:
    """Mount ``m`` at ``target`` (joined with ``m.target`` when set)."""
    where = os.path.join(target, m.target) if m.target else target
    flags, propagation, data = parse_options(m.options)
    _mount(m.source, where, m.type, flags & ~MS_REMOUNT if flags & MS_BIND else flags, data)
    if propagation:
        _mount("", where, "", propagation, "")
    # a bind mount ignores MS_RDONLY and the like until it is remounted with them
    if flags & MS_BIND and flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC):
        _mount("", where, "", flags | MS_REMOUNT, "")


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    """Mount each of ``mounts`` at ``target``, in order."""
    for m in mounts:
        mount(m, target)


def unmount_all(target: str) -> None:
    """Unmount everything stacked at ``target`` (nothing mounted there is fine)."""
    libc = _libc()
    for _ in range(64):
        if libc.umount2(target.encode(), UMOUNT_NOFOLLOW) != 0:
            err = ctypes.get_errno()
            if err == errno.EINVAL:  # not a mount point (any more)
                return
            if err == errno.ENOENT:
                msg = f"unmount {target}: {os.strerror(err)}"
                raise InvalidArgumentError(msg)
            _check(-1, f"unmount {target}")
    msg = f"unmount {target}: too many stacked mounts"
    raise FailedPreconditionError(msg)
