"""Filesystem helpers: a faithful tree copy and disk usage (containerd's ``continuity/fs``).

:func:`copy_tree` copies a directory the way a snapshot copy must: hard links
stay hard links, and ownership, permission bits (including set-id bits),
extended attributes and timestamps are kept; device nodes and FIFOs are
recreated; sockets cannot be copied and are skipped with a log line.

All functions are blocking; call them from a worker thread.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from typing import TYPE_CHECKING

from pycontainerd.core.snapshots import Usage

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["copy_tree", "copy_xattrs", "disk_usage"]

log = logging.getLogger(__name__)


def copy_xattrs(src: str, dst: str) -> None:
    """Copy every extended attribute of ``src`` to ``dst`` (neither followed if a symlink)."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in {errno.ENOTSUP, errno.EOPNOTSUPP}:
            return
        raise
    for name in names:
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}:
                log.debug("xattr %s not copied to %s: %s", name, dst, exc)
                continue
            raise


def _copy_metadata(src: str, dst: str, st: os.stat_result) -> None:
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    copy_xattrs(src, dst)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def copy_tree(src: str | Path, dst: str | Path) -> None:
    """Copy the tree under ``src`` into the (existing or new) directory ``dst``."""
    src = os.fspath(src)
    dst = os.fspath(dst)
    links: dict[tuple[int, int], str] = {}
    st = os.lstat(src)
    if not os.path.isdir(dst):
        os.mkdir(dst, 0o700)
    _copy_dir(src, dst, links)
    _copy_metadata(src, dst, st)


def _copy_dir(src: str, dst: str, links: dict[tuple[int, int], str]) -> None:
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        s = entry.path
        d = os.path.join(dst, entry.name)
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            if not os.path.isdir(d):
                os.mkdir(d, 0o700)
            _copy_dir(s, d, links)
            _copy_metadata(s, d, st)
            continue
        if st.st_nlink > 1 and not stat.S_ISDIR(mode):
            first = links.get((st.st_dev, st.st_ino))
            if first is not None:
                os.link(first, d, follow_symlinks=False)
                continue
        if stat.S_ISREG(mode):
            shutil.copyfile(s, d, follow_symlinks=False)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(s), d)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(d, mode, st.st_rdev)
        elif stat.S_ISSOCK(mode):
            log.info("skipping socket %s while copying: sockets cannot be copied", s)
            continue
        else:
            log.warning("skipping %s while copying: unsupported file type %o", s, mode)
            continue
        _copy_metadata(s, d, st)
        if st.st_nlink > 1:
            links[(st.st_dev, st.st_ino)] = d


def disk_usage(path: str | Path) -> Usage:
    """Inodes and bytes (``st_blocks * 512``) used under ``path``; hard links count once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    stack = [os.fspath(path)]
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(stack[0])
        seen.add((st.st_dev, st.st_ino))
        size += st.st_blocks * 512
    while stack:
        current = stack.pop()
        try:
            it = os.scandir(current)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    continue
                seen.add(key)
                size += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return Usage(inodes=len(seen), size=size)
