"""The ``mount(2)``/``umount2(2)`` system calls and ``mount(8)`` option parsing.

Both sides that mount a :class:`~pycontainerd.core.types.Mount` build on this
module: the daemon's snapshotters and differ (``pycontainerd.snapshots.mount``)
and the client's ``ctr images mount`` (``pycontainerd.client.mount``). It holds
only what they share: the ``MS_*``/``MNT_*`` constants, the split of
``mount(8)`` options into flags, propagation flags and a data string (the
table containerd's ``mount`` package uses), and thin ``ctypes`` wrappers that
raise :class:`OSError` with the call's ``errno``, and :func:`mount_all`, the
daemon's way to stack a list of mounts (the snapshotters' temporary mounts and
the shim's rootfs): it shortens overlay ``lowerdir=`` lists that do not fit the
kernel's one page of mount data and undoes what it mounted when one mount
fails. How mounts are unmounted or retried stays with each caller.

Linux only; the calls normally need root. Pure standard library: importing it
loads ``ctypes`` but never grpc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from pycontainerd.core.types import Mount

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
    "PAGE_SIZE",
    "UMOUNT_NOFOLLOW",
    "MountOptions",
    "mount",
    "mount_all",
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


#: The kernel copies at most one page of mount data.
PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")


def _common_dir(paths: Sequence[str]) -> str:
    common = posixpath.commonpath(paths) if paths else "/"
    # A layer must stay a sub-path of the common directory, never the directory itself.
    if common in paths:
        common = posixpath.dirname(common)
    return common


@contextlib.contextmanager
def _compact_overlay(data: str) -> Iterator[str]:
    """Shorten ``lowerdir=`` paths in ``data`` through ``/proc/self/fd`` when too long."""
    if len(data) < PAGE_SIZE:
        yield data
        return
    options = data.split(",")
    index = next((i for i, o in enumerate(options) if o.startswith("lowerdir=")), -1)
    if index < 0:
        yield data
        return
    lowers = options[index].removeprefix("lowerdir=").split(":")
    common = _common_dir(lowers)
    fd = os.open(common, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        prefix = f"/proc/self/fd/{fd}/"
        short = [prefix + posixpath.relpath(p, common) for p in lowers]
        options[index] = "lowerdir=" + ":".join(short)
        compacted = ",".join(options)
        if len(compacted) >= PAGE_SIZE:
            msg = f"overlay mount options too long ({len(compacted)} bytes) even when compacted"
            raise InvalidArgumentError(msg)
        yield compacted
    finally:
        os.close(fd)


def mount(m: Mount, target: str | os.PathLike[str]) -> None:
    """Mount ``m`` on ``target`` (blocking; call it off the event loop).

    A read-only bind mount is made in two steps (bind, then remount read-only),
    as the kernel ignores ``MS_RDONLY`` on the first bind call.

    Raises:
        OSError: the system call failed.
        InvalidArgumentError: overlay options cannot fit the kernel's limit.
    """
    target = os.fspath(target)
    if m.target:
        target = posixpath.join(target, m.target.lstrip("/"))
    opts = parse_options(m.options)
    fstype = m.type
    flags = opts.flags
    if fstype in {"bind", "rbind"}:
        flags |= MS_BIND | (MS_REC if fstype == "rbind" else 0)
        fstype = "none"
    with _compact_overlay(opts.data) as data:
        sys_mount(m.source, target, fstype, flags, data)
    if flags & MS_BIND and flags & MS_RDONLY:
        remount = MS_REMOUNT | MS_BIND | MS_RDONLY | (flags & (MS_NOSUID | MS_NODEV | MS_NOEXEC))
        try:
            sys_mount("", target, "", remount, "")
        except OSError:
            sys_umount(target, MNT_DETACH)
            raise
    if opts.propagation:
        sys_mount("", target, "", opts.propagation, "")


def mount_all(mounts: Iterable[Mount], target: str | os.PathLike[str]) -> None:
    """Mount each of ``mounts`` on ``target`` in order; undo them all if one fails."""
    done = 0
    try:
        for m in mounts:
            mount(m, target)
            done += 1
    except BaseException:
        for _ in range(done):
            with contextlib.suppress(OSError):
                sys_umount(os.fspath(target), MNT_DETACH)
        raise
