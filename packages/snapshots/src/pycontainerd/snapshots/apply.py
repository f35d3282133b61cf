"""Applying a layer tar stream to a directory, as containerd's applier does.

:func:`apply_chunks` extracts an uncompressed layer into a directory,
streaming (one entry at a time, file data in chunks), with the layer
semantics of the OCI image spec and containerd's choices where the spec is
silent:

* entry paths are resolved inside the target (:mod:`.pathres`): symbolic
  links in parents are followed as if the target were ``/`` and ``..`` stops
  at it, so nothing is ever written outside; the target itself (``./``) is
  left alone;
* ``.wh.<name>`` removes ``<name>``; ``.wh..wh..opq`` removes everything
  below its directory that this layer did not write, whatever the entry order;
* hard links, symbolic links, device nodes and FIFOs are recreated; owner,
  mode (set-id bits included), extended attributes (PAX ``SCHILY.xattr.*``)
  and times are applied (times outside 1970..2262 become 0, the later of
  access and modification time is the access time); directory times last;
* with :class:`OverlayUpper`, the target is an overlay's upper directory and
  whiteouts are written as overlayfs reads them (containerd does this for
  its overlayfs snapshotter rather than mounting the overlay).

Nothing here recurses: trees of any depth are removed and walked with a
bounded number of open files.

All functions here are blocking; call them from a worker thread.
Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.snapshots.fsutil import DIR_FLAGS, TreeCursor, remove_all
from pycontainerd.snapshots.pathres import Root, clean_name
from pycontainerd.snapshots.tarread import BLK, CHR, DIR, FIFO, LNK, REG, SYM, Entry, TarReader

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["OPAQUE_WHITEOUT", "WHITEOUT_PREFIX", "OverlayUpper", "apply_chunks", "apply_tar"]

log = logging.getLogger(__name__)

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_WHITEOUT: Final = ".wh..wh..opq"
_CHUNK: Final = 1 << 20
_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_SUPPORTED: Final = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})
_MAX_TIME_NS: Final = (1 << 63) - 1
_NO_ID: Final = 0xFFFFFFFF


def _proc(fd: int, name: str) -> str:
    return f"/proc/self/fd/{fd}/{name}"


def _bound(ns: int) -> int:
    """A time containerd can set: outside 1970 .. 2262 it sets the epoch."""
    return ns if 0 <= ns <= _MAX_TIME_NS else 0


def _id(value: int) -> int:
    """A uid or gid as the kernel takes it from Go (its low 32 bits; all ones: unchanged)."""
    value &= _NO_ID
    return -1 if value == _NO_ID else value


def _umask() -> int | None:
    """The process umask, read without changing it (``None`` if the kernel does not say)."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


@dataclass
class _Applier:
    root: Root
    reader: TarReader
    #: resolved paths written by this layer (kept when a directory turns opaque)
    unpacked: set[str] = field(default_factory=set)
    dir_times: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    #: the last parent directory opened: (path as named, fd, resolved path)
    cached: tuple[str, int, str] | None = None
    #: something was removed since ``cached`` was opened: resolve the next parent afresh
    stale: bool = False
    #: the owner a file made in the ``cached`` directory gets (looked up once per directory)
    cached_owner: tuple[int, int] | None = None
    #: the process umask (``None``: unknown, so every file's mode is set explicitly)
    umask: int | None = field(default_factory=_umask)

    def run(self) -> None:
        try:
            for entry in self.reader:
                self.entry(entry)
            for rel, times in self.dir_times:
                self.set_dir_times(rel, times)
        finally:
            self.close_cached()

    def set_dir_times(self, rel: str, times: tuple[int, int]) -> None:
        try:
            fd, _ = self.parent(rel, rel, create=False)
        except (FileNotFoundError, InvalidArgumentError):
            return
        os.utime(fd, ns=times)

    def close_cached(self) -> None:
        self.cached_owner = None
        if self.cached is not None:
            fd = self.cached[1]
            self.cached = None
            self.root.release(fd)

    def parent(self, parent: str, entry: str, *, create: bool = True) -> tuple[int, str]:
        """The directory ``parent`` (created if missing): its fd and resolved path.

        Consecutive entries in one directory reuse its fd, and an entry one
        level below the last directory opens from it: a tar lists trees depth
        first, so this keeps resolution cheap however deep the tree. Only
        plain directories are stepped into that way; anything else resolves
        from the root. A removal or replacement can change what a name
        resolves to, so it marks the cache stale.
        """
        cached = self.cached
        if cached is not None and not self.stale:
            name, fd, resolved = cached
            if name == parent:
                return fd, resolved
            prefix = f"{name}/" if name else ""
            if parent.startswith(prefix) and "/" not in parent[len(prefix) :]:
                comp = parent[len(prefix) :]
                try:
                    child = self.root.child_dir(fd, resolved, comp, create=create)
                except FileNotFoundError:
                    child = None
                if child is not None:
                    self.close_cached()
                    self.cached = (parent, child, _join(resolved, comp))
                    return child, self.cached[2]
        fd, resolved = self.root.open_dir(parent, entry=entry, create=create)
        self.close_cached()
        self.cached, self.stale = (parent, fd, resolved), False
        return fd, resolved

    def entry(self, info: Entry) -> None:
        rel = clean_name(info.name)
        if not rel:
            return  # the target itself: containerd leaves its owner, mode and times alone
        parent, _, base = rel.rpartition("/")
        dfd, resolved = self.parent(parent, info.name)
        path = _join(resolved, base)
        if base.startswith(WHITEOUT_PREFIX):
            if base != OPAQUE_WHITEOUT:
                target = base.removeprefix(WHITEOUT_PREFIX)
                if target in {"", ".", ".."}:
                    msg = f"invalid whiteout name: {base}: invalid archive"
                    raise InvalidArgumentError(msg)
            self.stale = True
            self.whiteout(dfd, resolved, base, info)
            return
        if info.type in REG:
            self.regular(info, dfd, base)
        else:
            self.create(info, dfd, base, path)
        self.unpacked.add(path)

    def whiteout(self, dfd: int, resolved: str, base: str, info: Entry) -> None:
        del info
        if base == OPAQUE_WHITEOUT:
            self.clear_opaque(dfd, resolved)
            return
        remove_all(dfd, base.removeprefix(WHITEOUT_PREFIX))

    def clear_opaque(self, dfd: int, resolved: str) -> None:
        """Remove everything below the directory that this layer did not write."""
        with TreeCursor(dfd) as cur:
            todo: list[list[str]] = [self.clear_level(dfd, resolved)]
            paths = [resolved]
            while todo:
                if not todo[-1]:
                    todo.pop()
                    paths.pop()
                    if todo:
                        cur.up()
                    continue
                name = todo[-1].pop()
                cur.down(name)
                here = cur.fd()
                if here is None:
                    cur.up()
                    continue
                paths.append(_join(paths[-1], name))
                todo.append(self.clear_level(here, paths[-1]))

    def clear_level(self, fd: int, rel: str) -> list[str]:
        """Remove what was not written in directory ``fd``; the written subdirectories."""
        keep: list[str] = []
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            if _join(rel, entry.name) not in self.unpacked:
                remove_all(fd, entry.name)
            elif entry.is_dir(follow_symlinks=False):
                keep.append(entry.name)
        return keep

    def replace(self, dfd: int, name: str, *, keep_dir: bool) -> os.stat_result | None:
        """Remove what is at ``name`` (a directory stays when ``keep_dir``); its old stat."""
        try:
            existing = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return None
        if keep_dir and stat.S_ISDIR(existing.st_mode):
            return existing
        self.stale = True
        remove_all(dfd, name)
        return None

    def create(self, info: Entry, dfd: int, name: str, path: str) -> None:
        kind = info.type
        # directories and symbolic links (most entries but files) are made first and what
        # is in the way removed only if that fails: one lstat fewer for each
        if kind == DIR:
            fresh = True
            try:
                os.mkdir(name, 0o700, dir_fd=dfd)
            except FileExistsError:
                if self.replace(dfd, name, keep_dir=True) is None:
                    os.mkdir(name, 0o700, dir_fd=dfd)
                else:
                    fresh = False
            self.metadata(info, dfd, name, fresh=fresh)
            self.dir_times.append((path, (_bound(info.atime_ns), _bound(info.mtime_ns))))
            return
        if kind == SYM:
            try:
                os.symlink(info.linkname, name, dir_fd=dfd)
            except FileExistsError:
                self.replace(dfd, name, keep_dir=False)
                os.symlink(info.linkname, name, dir_fd=dfd)
            self.metadata(info, dfd, name, fresh=True)
            return
        self.replace(dfd, name, keep_dir=False)
        if kind == LNK:
            self.hardlink(info, dfd, name)
        elif kind in {CHR, BLK, FIFO}:
            fmt = stat.S_IFCHR if kind == CHR else stat.S_IFBLK if kind == BLK else stat.S_IFIFO
            os.mknod(name, fmt | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=dfd)
        else:
            msg = f"cannot extract {info.name!r}: unhandled tar header type {kind}"
            raise InvalidArgumentError(msg)
        self.metadata(info, dfd, name)

    def new_owner(self, dfd: int) -> tuple[int, int]:
        """The owner ``open`` gives a file made in directory ``dfd`` (the cached one)."""
        if self.cached_owner is None:
            st = os.fstat(dfd)
            gid = st.st_gid if st.st_mode & stat.S_ISGID else os.getegid()
            self.cached_owner = (os.geteuid(), gid)
        return self.cached_owner

    def regular(self, info: Entry, dfd: int, name: str) -> None:
        # As containerd, the file is made with its final permission bits: when the umask
        # keeps them all (and there are no set-id or sticky bits), no chmod is needed.
        mode = stat.S_IMODE(info.mode)
        exact = self.umask is not None and not mode & ~0o777 and not mode & self.umask
        create = mode if exact else 0o600
        try:
            fd = os.open(name, _FILE_FLAGS, create, dir_fd=dfd)
        except FileExistsError:
            self.replace(dfd, name, keep_dir=False)
            fd = os.open(name, _FILE_FLAGS, create, dir_fd=dfd)
        try:
            self.reader.write_data(info, fd)
            uid, gid = _id(info.uid), _id(info.gid)
            have_uid, have_gid = self.new_owner(dfd)
            if uid not in {-1, have_uid} or gid not in {-1, have_gid}:
                try:
                    os.fchown(fd, uid, gid)
                except PermissionError:
                    log.debug("cannot chown %r to %d:%d", info.name, info.uid, info.gid)
            if not exact:
                os.fchmod(fd, mode)
            for key, value in info.xattrs.items():
                try:
                    os.setxattr(fd, key, value)
                except OSError as exc:
                    if exc.errno not in _NOT_SUPPORTED:
                        raise
                    log.debug("xattr %s of %r not applied: %s", key, info.name, exc)
            os.utime(fd, ns=(_bound(info.atime_ns), _bound(info.mtime_ns)))
        finally:
            os.close(fd)

    def hardlink(self, info: Entry, dfd: int, name: str) -> None:
        target = clean_name(info.linkname)
        missing = f"cannot extract {info.name!r}: hard link target {info.linkname!r} missing"
        if not target:
            msg = f"cannot extract {info.name!r}: hard link to the target directory itself"
            raise InvalidArgumentError(msg)
        parent, _, base = target.rpartition("/")
        try:
            tfd, _ = self.root.open_dir(parent, entry=info.name, create=False)
        except FileNotFoundError as exc:
            raise InvalidArgumentError(missing) from exc
        try:
            os.link(base, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError as exc:
            raise InvalidArgumentError(missing) from exc
        finally:
            self.root.release(tfd)

    def metadata(self, info: Entry, dfd: int, name: str, *, fresh: bool = False) -> None:
        """Owner, extended attributes, mode and (but for directories) times, as containerd.

        ``fresh``: ``name`` was just made in ``dfd`` (the cached directory), so it has the
        owner :meth:`new_owner` says and needs no chown if that is the entry's.
        """
        uid, gid = _id(info.uid), _id(info.gid)
        have_uid, have_gid = self.new_owner(dfd) if fresh else (None, None)
        if uid not in {-1, have_uid} or gid not in {-1, have_gid}:
            try:
                os.chown(name, uid, gid, dir_fd=dfd, follow_symlinks=False)
            except PermissionError:
                log.debug("cannot chown %r to %d:%d", info.name, info.uid, info.gid)
        for key, value in info.xattrs.items():
            try:
                os.setxattr(_proc(dfd, name), key, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NOT_SUPPORTED:
                    raise
                log.debug("xattr %s of %r not applied: %s", key, info.name, exc)
        is_link = info.type == SYM or (
            info.type == LNK and stat.S_ISLNK(os.lstat(name, dir_fd=dfd).st_mode)
        )
        if not is_link:
            os.chmod(_proc(dfd, name), stat.S_IMODE(info.mode))
        if info.type != DIR:
            times = (_bound(info.atime_ns), _bound(info.mtime_ns))
            os.utime(name, ns=times, dir_fd=dfd, follow_symlinks=False)


@dataclass(frozen=True)
class OverlayUpper:
    """Apply straight into an overlay's upper directory (containerd's overlay whiteouts).

    Attributes:
        lowers: the overlay's lower directories, nearest first; a parent
            directory missing from the upper one takes its owner, mode, times
            and extended attributes from the first lower that has it.
        xattr_prefix: ``trusted.overlay.`` (or ``user.overlay.`` for a
            ``userxattr`` mount), for the opaque-directory attribute.
    """

    lowers: Sequence[str] = ()
    xattr_prefix: str = "trusted.overlay."


@dataclass
class _OverlayApplier(_Applier):
    """Writes a layer into an overlay's upper directory, whiteouts as overlayfs reads them.

    A whiteout becomes a 0/0 character device (owned as the entry says), an
    opaque directory gets the ``<prefix>opaque=y`` attribute: overlayfs then
    hides everything the lower layers have below it, as containerd's
    overlay applier relies on.
    """

    overlay: OverlayUpper = field(default_factory=OverlayUpper)

    def __post_init__(self) -> None:
        self.root.on_mkdir = self.copy_dir_info

    def copy_dir_info(self, parent_fd: int, name: str, rel: str) -> None:
        """Give a parent made in the upper directory the metadata of the lower one it covers."""
        for lower in self.overlay.lowers:
            src = _open_lower_dir(lower, rel)
            if src is _REPLACED:
                break
            if src is None:
                continue
            try:
                dst = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
                try:
                    self.copy_attrs(src, dst, os.fstat(src))
                finally:
                    os.close(dst)
            finally:
                os.close(src)
            return
        os.utime(name, ns=(0, 0), dir_fd=parent_fd, follow_symlinks=False)

    def copy_attrs(self, src: int, dst: int, st: os.stat_result) -> None:
        """Owner, mode, extended attributes (but overlayfs's own) and times of ``src``."""
        with contextlib.suppress(PermissionError):
            os.fchown(dst, st.st_uid, st.st_gid)
        os.fchmod(dst, stat.S_IMODE(st.st_mode))
        with contextlib.suppress(OSError):
            for key in os.listxattr(src):
                if not key.startswith(self.overlay.xattr_prefix):
                    os.setxattr(dst, key, os.getxattr(src, key))
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))

    def whiteout(self, dfd: int, resolved: str, base: str, info: Entry) -> None:
        del resolved
        if base == OPAQUE_WHITEOUT:
            os.setxattr(dfd, self.overlay.xattr_prefix + "opaque", b"y")
            return
        target = base.removeprefix(WHITEOUT_PREFIX)
        remove_all(dfd, target)
        os.mknod(target, stat.S_IFCHR, 0, dir_fd=dfd)
        with contextlib.suppress(PermissionError):
            os.chown(target, _id(info.uid), _id(info.gid), dir_fd=dfd, follow_symlinks=False)

    def hardlink(self, info: Entry, dfd: int, name: str) -> None:
        """Link within the upper directory, copying the target up from a lower one first.

        (Through a mounted overlay the kernel would copy it up on ``link``.)
        """
        target = clean_name(info.linkname)
        if not target:
            msg = f"cannot extract {info.name!r}: hard link to the target directory itself"
            raise InvalidArgumentError(msg)
        missing = f"cannot extract {info.name!r}: hard link target {info.linkname!r} missing"
        parent, _, base = target.rpartition("/")
        tfd = _try_open_dir(self.root, parent, info.name)
        try:
            st = None
            if tfd is not None:
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(base, dir_fd=tfd)
            if st is None:
                if not self.copy_up(target, info.name):
                    raise InvalidArgumentError(missing)
                if tfd is None:
                    tfd, _ = self.root.open_dir(parent, entry=info.name, create=False)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout: removed
                raise InvalidArgumentError(missing)
            os.link(base, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            if tfd is not None:
                self.root.release(tfd)

    def copy_up(self, rel: str, entry: str) -> bool:
        """Copy ``rel`` from the nearest lower that shows it into the upper directory."""
        parent, _, base = rel.rpartition("/")
        for lower in self.overlay.lowers:
            try:
                root = Root(lower)
            except OSError:
                continue
            try:
                pfd = _try_open_dir(root, parent, entry)
                if pfd is None:
                    continue
                try:
                    try:
                        st = os.lstat(base, dir_fd=pfd)
                    except FileNotFoundError:
                        try:
                            opaque = os.getxattr(pfd, self.overlay.xattr_prefix + "opaque")
                        except OSError:
                            opaque = b""
                        if opaque == b"y":
                            return False
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        return False  # a whiteout, a directory or a special file
                    self.copy_file(pfd, base, st, rel, entry)
                    return True
                finally:
                    root.release(pfd)
            finally:
                root.close()
        return False

    def copy_file(self, src_dir: int, base: str, st: os.stat_result, rel: str, entry: str) -> None:
        src = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
        try:
            parent, _, name = rel.rpartition("/")
            dfd, _ = self.root.open_dir(parent, entry=entry, create=True)
            self.stale = True  # parents may have been made
            try:
                dst = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dfd)
                try:
                    left = st.st_size
                    while left > 0:
                        n = os.sendfile(dst, src, None, min(left, 1 << 30))
                        if n == 0:
                            break
                        left -= n
                    self.copy_attrs(src, dst, st)
                finally:
                    os.close(dst)
            finally:
                self.root.release(dfd)
        finally:
            os.close(src)


_REPLACED: Final = -1


def _try_open_dir(root: Root, rel: str, entry: str) -> int | None:
    """Directory ``rel`` of a root, or ``None`` if it is not there."""
    try:
        return root.open_dir(rel, entry=entry, create=False)[0]
    except (OSError, InvalidArgumentError):
        return None


def _open_lower_dir(lower: str, rel: str) -> int | None:
    """An fd of directory ``rel`` in ``lower``, resolved inside it.

    ``None`` when nothing is there, :data:`_REPLACED` when something other
    than a directory is.
    """
    try:
        root = Root(lower)
    except OSError:
        return None
    try:
        parent, _, base = rel.rpartition("/")
        pfd = _try_open_dir(root, parent, rel)
        if pfd is None:
            return None
        try:
            st = os.lstat(base, dir_fd=pfd)
        except FileNotFoundError:
            return None
        finally:
            root.release(pfd)
        if not stat.S_ISDIR(st.st_mode):
            return _REPLACED
        dfd = _try_open_dir(root, rel, rel)
        if dfd is None:
            return None
        return dfd if dfd != root.fd else os.dup(dfd)
    finally:
        root.close()


def apply_chunks(
    chunks: Iterable[bytes],
    target: str | os.PathLike[str],
    *,
    overlay: OverlayUpper | None = None,
) -> None:
    """Extract the uncompressed layer given as byte ``chunks`` into ``target`` (streaming).

    Stops at the archive's end: the caller drains whatever follows. With
    ``overlay``, ``target`` is an overlay's upper directory and whiteouts are
    written the way overlayfs records them.

    Raises:
        InvalidArgumentError: the archive is malformed (or an entry cannot be
            resolved inside ``target``).
    """
    root = Root(os.fspath(target))
    try:
        reader = TarReader(iter(chunks))
        if overlay is None:
            _Applier(root, reader).run()
        else:
            _OverlayApplier(root, reader, overlay=overlay).run()
    finally:
        root.close()


def apply_tar(stream: IO[bytes], target: str | os.PathLike[str]) -> None:
    """Extract the uncompressed layer ``stream`` into ``target`` (streaming).

    Raises:
        InvalidArgumentError: the archive is malformed.
    """
    apply_chunks(iter(lambda: stream.read(_CHUNK), b""), target)
