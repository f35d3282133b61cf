"""Filesystem helpers: a faithful tree copy and disk usage (containerd's ``continuity/fs``).

:func:`copy_tree` copies a directory the way a snapshot copy must: hard links
stay hard links (regular files: other hard-linked types are copied apart, as
continuity does), and ownership, permission bits (including set-id bits),
extended attributes and timestamps are kept; device nodes, FIFOs and socket
nodes are recreated. Nothing recurses: a tree of any depth copies with a
bounded number of open files.

All functions are blocking; call them from a worker thread.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from typing import TYPE_CHECKING, Final

from pycontainerd.core.snapshots import Usage

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "DIR_FLAGS",
    "TreeCursor",
    "copy_tree",
    "copy_xattrs",
    "disk_usage",
    "open_below",
    "remove_all",
    "remove_tree",
]

log = logging.getLogger(__name__)

DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_CHUNK: Final = 2048  # bytes of path resolved per openat call below a directory fd


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


def _copy_metadata_at(src_dir: int, dst_dir: int, name: str, st: os.stat_result) -> None:
    os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(_proc(dst_dir, name), stat.S_IMODE(st.st_mode))
    copy_xattrs(_proc(src_dir, name), _proc(dst_dir, name))
    os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False)


def _proc(dir_fd: int, name: str) -> str:
    """A path naming ``name`` in ``dir_fd`` for calls that take no ``dir_fd``."""
    return f"/proc/self/fd/{dir_fd}/{name}"


class TreeCursor:
    """Directory fds that walk down and up trees of any depth in step, O(1) fds open.

    Going down opens a child of each current directory (``O_NOFOLLOW``);
    going up opens ``..``. A tree that lacks the child (or where it is not a
    directory) stays parked where it is, and :meth:`fd` gives ``None`` for it
    until the cursor is back at that level. Python's recursion limit and the
    kernel's PATH_MAX never come into play, whatever the depth.
    """

    def __init__(self, *fds: int | None) -> None:
        self._fds: list[int] = []
        self._parked: list[int | None] = []
        self.depth = 0
        for fd in fds:
            self._fds.append(os.dup(fd) if fd is not None else -1)
            self._parked.append(None if fd is not None else -1)

    def fd(self, i: int = 0) -> int | None:
        """The current directory of tree ``i`` (``None`` when it has none here)."""
        return self._fds[i] if self._parked[i] is None else None

    def down(self, name: str) -> None:
        """Enter subdirectory ``name`` (in every tree that has it)."""
        for i, fd in enumerate(self._fds):
            if self._parked[i] is not None:
                continue
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}:
                    raise
                self._parked[i] = self.depth
                continue
            os.close(fd)
            self._fds[i] = child
        self.depth += 1

    def up(self) -> None:
        """Go back to the parent directory."""
        self.depth -= 1
        for i, fd in enumerate(self._fds):
            parked = self._parked[i]
            if parked is None:
                parent = os.open("..", DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                self._fds[i] = parent
            elif parked == self.depth:
                self._parked[i] = None

    def close(self) -> None:
        for fd in self._fds:
            if fd >= 0:
                os.close(fd)
        self._fds = []

    def __enter__(self) -> TreeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_all(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` whatever it is, without recursion and never following links.

    A directory goes with everything below it, however deep; a missing name is no error.
    """
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    with TreeCursor(dir_fd) as cur:
        names: list[str] = []  # the directories entered, below ``dir_fd``
        todo: list[list[str]] = [[name]]  # subdirectories left to empty, per level
        while todo:
            if not todo[-1]:
                todo.pop()
                if names:
                    cur.up()
                    os.rmdir(names.pop(), dir_fd=_fd(cur))
                continue
            sub = todo[-1].pop()
            cur.down(sub)
            here = cur.fd()
            if here is None:  # not a directory (any more)
                cur.up()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(sub, dir_fd=_fd(cur))
                continue
            names.append(sub)
            dirs: list[str] = []
            with os.scandir(here) as it:
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        dirs.append(entry.name)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=here)
            todo.append(dirs)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """``shutil.rmtree`` without recursion: ``path`` and everything below it, however deep."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    pfd = os.open(parent, DIR_FLAGS)
    try:
        remove_all(pfd, name)
    finally:
        os.close(pfd)


def _fd(cur: TreeCursor, i: int = 0) -> int:
    fd = cur.fd(i)
    if fd is None:
        msg = "tree cursor lost its directory"
        raise FileNotFoundError(errno.ENOENT, msg)
    return fd


def open_below(root_fd: int, rel: str) -> int:
    """Open directory ``rel`` below ``root_fd`` a few components at a time (any length)."""
    fd = os.dup(root_fd)
    parts = [p for p in rel.split("/") if p]
    try:
        while parts:
            take: list[str] = []
            size = 0
            while parts and (not take or size + len(parts[0]) < _PATH_CHUNK):
                size += len(parts[0]) + 1
                take.append(parts.pop(0))
            child = os.open("/".join(take), DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy_tree(src: str | Path, dst: str | Path) -> None:
    """Copy the tree under ``src`` into the (existing or new) directory ``dst`` (any depth)."""
    src = os.fspath(src)
    dst = os.fspath(dst)
    st = os.lstat(src)
    if not os.path.isdir(dst):
        os.mkdir(dst, 0o700)
    sfd = os.open(src, DIR_FLAGS)
    dfd = os.open(dst, DIR_FLAGS)
    try:
        _copy_dirs(sfd, dfd)
        _copy_metadata_at(sfd, dfd, ".", st)
    finally:
        os.close(sfd)
        os.close(dfd)


def _copy_dirs(src_root: int, dst_root: int) -> None:
    links: dict[tuple[int, int], str] = {}
    with TreeCursor(src_root, dst_root) as cur:
        # one frame per directory being copied: (its name, its stat, subdirectories left)
        frames: list[tuple[str, os.stat_result | None, list[tuple[str, os.stat_result]]]] = []
        frames.append(("", None, _copy_entries(cur, "", links)))
        while frames:
            name, st, pending = frames[-1]
            if pending:
                sub, sub_st = pending.pop()
                with contextlib.suppress(FileExistsError):
                    os.mkdir(sub, 0o700, dir_fd=_fd(cur, 1))
                cur.down(sub)
                rel = f"{name}/{sub}" if name else sub
                frames.append((rel, sub_st, _copy_entries(cur, rel, links)))
                continue
            frames.pop()
            if st is not None:
                cur.up()
                _copy_metadata_at(_fd(cur), _fd(cur, 1), name.rpartition("/")[2], st)


def _copy_entries(
    cur: TreeCursor, rel: str, links: dict[tuple[int, int], str]
) -> list[tuple[str, os.stat_result]]:
    """Copy the non-directories of the current directory; return its subdirectories."""
    src, dst = _fd(cur), _fd(cur, 1)
    dirs: list[tuple[str, os.stat_result]] = []
    with os.scandir(src) as it:
        entries = list(it)
    for entry in entries:
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            dirs.append((name, st))
            continue
        child = f"{rel}/{name}" if rel else name
        linked = stat.S_ISREG(mode) and st.st_nlink > 1  # as continuity: files only
        if linked:
            first = links.get((st.st_dev, st.st_ino))
            if first is not None:
                _link_from(cur, first, dst, name)
                continue
        if stat.S_ISREG(mode):
            _copy_file(src, dst, name)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            os.mknod(name, mode, st.st_rdev, dir_fd=dst)
        else:
            log.warning("skipping %s while copying: unsupported file type %o", child, mode)
            continue
        _copy_metadata_at(src, dst, name, st)
        if linked:
            links[(st.st_dev, st.st_ino)] = child
    dirs.reverse()  # popped from the end: copied in listing order
    return dirs


def _link_from(cur: TreeCursor, first: str, dst: int, name: str) -> None:
    """Hard-link ``name`` in ``dst`` to the copy ``first`` (relative to the copy's root)."""
    parent, _, base = first.rpartition("/")
    root = _copy_root(cur)
    pfd = open_below(root, parent)
    try:
        os.link(base, name, src_dir_fd=pfd, dst_dir_fd=dst, follow_symlinks=False)
    finally:
        os.close(pfd)
        os.close(root)


def _copy_root(cur: TreeCursor) -> int:
    """A fresh fd of the destination root, found by going up from the current directory."""
    fd = os.dup(_fd(cur, 1))
    for _ in range(cur.depth):
        parent = os.open("..", DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = parent
    return fd


def _copy_file(src_dir: int, dst_dir: int, name: str) -> None:
    sfd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
    try:
        dfd = os.open(
            name,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dst_dir,
        )
        try:
            left = os.fstat(sfd).st_size
            while left > 0:
                n = os.sendfile(dfd, sfd, None, min(left, 1 << 30))
                if n == 0:
                    break
                left -= n
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def disk_usage(path: str | Path) -> Usage:
    """Inodes and bytes (``st_blocks * 512``) used under ``path``; hard links count once."""
    seen: set[tuple[int, int]] = set()
    size = 0
    try:
        top = os.open(os.fspath(path), DIR_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        return Usage(inodes=0, size=0)
    try:
        st = os.fstat(top)
        seen.add((st.st_dev, st.st_ino))
        size += st.st_blocks * 512
        with TreeCursor(top) as cur:

            def scan() -> list[str]:
                nonlocal size
                dirs: list[str] = []
                with os.scandir(_fd(cur)) as it:
                    for entry in it:
                        est = entry.stat(follow_symlinks=False)
                        key = (est.st_dev, est.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                        size += est.st_blocks * 512
                        if stat.S_ISDIR(est.st_mode):
                            dirs.append(entry.name)
                return dirs

            todo = [scan()]
            while todo:
                if not todo[-1]:
                    todo.pop()
                    if todo:
                        cur.up()
                    continue
                cur.down(todo[-1].pop())
                if cur.fd() is None:  # gone meanwhile
                    cur.up()
                    continue
                todo.append(scan())
    finally:
        os.close(top)
    return Usage(inodes=len(seen), size=size)
