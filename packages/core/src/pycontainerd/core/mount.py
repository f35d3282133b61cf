"""The ``mount(2)``/``umount2(2)`` system calls and ``mount(8)`` option parsing.

Both sides that mount a :class:`~pycontainerd.core.types.Mount` build on this
module: the daemon's snapshotters and differ (``pycontainerd.snapshots.mount``)
and the client's ``ctr images mount`` (``pycontainerd.client.mount``). It holds
only what they share: the ``MS_*``/``MNT_*`` constants, the split of
``mount(8)`` options into flags, propagation flags and a data string (the
table containerd's ``mount`` package uses), and thin ``ctypes`` wrappers that
raise :class:`OSError` with the call's ``errno``. How a list of mounts is
stacked, undone or retried stays with each caller.

Linux only; the calls normally need root. Pure standard library: importing it
loads ``ctypes`` but never grpc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "MNT_DETACH",
    "MS_BIND",
    "MS_DIRSYNC",
    "MS_MANDLOCK",
    "MS_NOATIME",
    "MS_NODEV",
    "MS_NODIRATIME",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_RELATIME",
    "MS_REMOUNT",
    "MS_SHARED",
    "MS_SLAVE",
    "MS_STRICTATIME",
    "MS_SYNCHRONOUS",
    "MS_UNBINDABLE",
    "UMOUNT_NOFOLLOW",
    "MountOptions",
    "parse_options",
    "sys_mount",
    "sys_umount",
]

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
MS_UNBINDABLE: Final = 0x20000
MS_PRIVATE: Final = 0x40000
MS_SLAVE: Final = 0x80000
MS_SHARED: Final = 0x100000
MS_RELATIME: Final = 0x200000
MS_STRICTATIME: Final = 0x1000000

MNT_DETACH: Final = 0x2
UMOUNT_NOFOLLOW: Final = 0x8

# option -> (clear?, flag)
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
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE,
    "runbindable": MS_UNBINDABLE | MS_REC,
}


@dataclass(frozen=True, slots=True)
class MountOptions:
    """Options of a :class:`~pycontainerd.core.types.Mount` split the way ``mount(2)`` wants them.

    Attributes:
        flags: ``MS_*`` flags for the mount itself.
        propagation: ``MS_SHARED``/``MS_PRIVATE``/... applied in a second call.
        data: the filesystem-specific rest, comma-joined.
    """

    flags: int
    propagation: int
    data: str


def parse_options(options: Iterable[str]) -> MountOptions:
    """Split ``mount(8)`` options into flags, propagation flags and data.

    A flag option sets or clears its ``MS_*`` bit, in order (``ro`` then ``rw``
    leaves the mount writable); the last propagation option wins; anything
    else is data for the filesystem.
    """
    flags = 0
    propagation = 0
    data: list[str] = []
    for option in options:
        known = _FLAGS.get(option)
        if known is not None:
            clear, flag = known
            flags = flags & ~flag if clear else flags | flag
        elif option in _PROPAGATION:
            propagation = _PROPAGATION[option]
        else:
            data.append(option)
    return MountOptions(flags=flags, propagation=propagation, data=",".join(data))


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc  # noqa: PLW0603 - loaded once, on first use
    if _libc is None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        lib.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        lib.mount.restype = ctypes.c_int
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.umount2.restype = ctypes.c_int
        _libc = lib
    return _libc


def sys_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """Call ``mount(2)``; an empty ``fstype`` or ``data`` is passed as ``NULL``.

    Raises:
        OSError: the call failed; ``errno`` is the kernel's, the message names
            the source, target, type and (the start of) the data.
    """
    rc = _lib().mount(
        os.fsencode(source),
        os.fsencode(target),
        os.fsencode(fstype) if fstype else None,
        flags,
        os.fsencode(data) if data else None,
    )
    if rc != 0:
        err = ctypes.get_errno()
        msg = f"mount {source!r} on {target!r} (type {fstype!r}, data {data[:200]!r})"
        raise OSError(err, f"{os.strerror(err)}: {msg}")


def sys_umount(target: str, flags: int) -> None:
    """Call ``umount2(2)`` once.

    Raises:
        OSError: the call failed (``EINVAL``: nothing is mounted at ``target``;
            ``EBUSY``: still in use).
    """
    if _lib().umount2(os.fsencode(target), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)}: unmount {target!r}")
