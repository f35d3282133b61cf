"""Mounting a snapshot's mounts on the client's host (containerd's ``mount.All``/``UnmountAll``).

``ctr images mount`` runs on the daemon's machine and mounts what the
snapshotter returns (``overlay`` with ``lowerdir=…``, ``bind`` with
``rbind``…) at a directory. This is the client side of that: mount(2) and
umount2(2) through libc, with containerd's option parsing (flags such as
``ro``/``nosuid``/``rbind`` become mount flags, the rest the data string), both
shared with the daemon in :mod:`pycontainerd.core.mount`; failures become
errdefs kinds. Linux only, and normally root only.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from pycontainerd.core.errdefs import FailedPreconditionError, InvalidArgumentError
from pycontainerd.core.mount import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REMOUNT,
    UMOUNT_NOFOLLOW,
    parse_options,
    sys_mount,
    sys_umount,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pycontainerd.core.types import Mount

__all__ = ["mount", "mount_all", "parse_options", "unmount_all"]


def _error(exc: OSError, what: str) -> FailedPreconditionError | InvalidArgumentError:
    msg = f"{what}: {os.strerror(exc.errno or 0)}"
    if exc.errno in (errno.EINVAL, errno.ENOENT, errno.ENOTDIR):
        return InvalidArgumentError(msg)
    return FailedPreconditionError(msg)


def _mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    try:
        sys_mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise _error(exc, f"mount {source} on {target} ({fstype})") from exc


def mount(m: Mount, target: str) -> None:
    """Mount ``m`` at ``target`` (joined with ``m.target`` when set)."""
    where = os.path.join(target, m.target) if m.target else target
    opts = parse_options(m.options)
    flags = opts.flags
    _mount(m.source, where, m.type, flags & ~MS_REMOUNT if flags & MS_BIND else flags, opts.data)
    if opts.propagation:
        _mount("", where, "", opts.propagation, "")
    # a bind mount ignores MS_RDONLY and the like until it is remounted with them
    if flags & MS_BIND and flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC):
        _mount("", where, "", flags | MS_REMOUNT, "")


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    """Mount each of ``mounts`` at ``target``, in order."""
    for m in mounts:
        mount(m, target)


def unmount_all(target: str) -> None:
    """Unmount everything stacked at ``target`` (nothing mounted there is fine)."""
    for _ in range(64):
        try:
            sys_umount(target, UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a mount point (any more)
                return
            raise _error(exc, f"unmount {target}") from exc
    msg = f"unmount {target}: too many stacked mounts"
    raise FailedPreconditionError(msg)
