"""Applying layer tarballs safely and writing them from two trees (containerd's ``archive``).

:func:`apply_tar` extracts an uncompressed layer stream into a directory,
streaming (one entry at a time, file data in chunks), with the layer
semantics of the OCI image spec:

* ``.wh.<name>`` removes ``<name>`` from the lower layers;
* ``.wh..wh..opq`` makes its directory opaque: what lower layers had there
  goes, what this layer put there stays;
* hard links, symbolic links, device nodes and FIFOs are recreated; owner,
  mode (set-id bits included), extended attributes (PAX ``SCHILY.xattr.*``)
  and modification times are applied; directory times are set last.

Nothing is ever written outside the target directory. Every path is resolved
one component at a time with ``openat``-style calls relative to the target;
a final component is never followed; a symbolic link met on the way is
followed only when it is relative and stays inside the target. So each of
these is refused with ``InvalidArgumentError`` before anything is written:
``../`` names that climb out, a parent directory that is (or was swapped
mid-archive into) an absolute or escaping symbolic link, and hard links
whose target lies outside.

:func:`write_diff` walks two directory trees and writes the tar that turns
the first into the second, whiteouts included.

All functions here are blocking; call them from a worker thread.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import posixpath
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "OPAQUE_WHITEOUT",
    "WHITEOUT_PREFIX",
    "apply_tar",
    "write_diff",
]

log = logging.getLogger(__name__)

WHITEOUT_PREFIX: Final = ".wh."
OPAQUE_WHITEOUT: Final = ".wh..wh..opq"
_XATTR_PREFIX: Final = "SCHILY.xattr."
_MAX_LINKS: Final = 40
_CHUNK: Final = 1 << 20
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class BreakoutError(InvalidArgumentError):
    """An archive entry would reach outside the target directory."""


def _breakout(name: str, why: str) -> BreakoutError:
    return BreakoutError(f"refusing tar entry {name!r}: {why}")


def clean_name(name: str) -> str:
    """The entry name relative to the target, or raise if it climbs out of it."""
    cleaned = posixpath.normpath("/" + name.lstrip("/")) if name else "/"
    if ".." in name.split("/"):
        relative = posixpath.normpath(name.lstrip("/"))
        if relative == ".." or relative.startswith("../"):
            raise _breakout(name, "path escapes the target directory")
    return cleaned.lstrip("/")


class _Root:
    """The target directory, with safe resolution of paths inside it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, _DIR_FLAGS)

    def close(self) -> None:
        os.close(self.fd)

    @contextlib.contextmanager
    def parent_of(self, rel: str, *, entry: str, create: bool = True) -> Iterator[tuple[int, str]]:
        """Open the directory holding ``rel``; yield ``(dir_fd, basename)``.

        Missing directories are created (mode 0755) when ``create``.
        """
        parent, _, base = rel.rpartition("/")
        fd = self.open_dir(parent, entry=entry, create=create)
        try:
            yield fd, base
        finally:
            if fd != self.fd:
                os.close(fd)

    def open_dir(self, rel: str, *, entry: str, create: bool) -> int:  # noqa: PLR0912
        """Open directory ``rel`` inside the root, following only inner relative links."""
        stack: list[int] = [self.fd]
        pending = [c for c in rel.split("/") if c not in {"", "."}]
        pending.reverse()
        links = 0
        try:
            while pending:
                comp = pending.pop()
                if comp == "..":
                    if len(stack) == 1:
                        raise _breakout(entry, "a symbolic link leads out of the target")
                    os.close(stack.pop())
                    continue
                cur = stack[-1]
                try:
                    st = os.lstat(comp, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=cur)
                    st = os.lstat(comp, dir_fd=cur)
                if stat.S_ISLNK(st.st_mode):
                    target = os.readlink(comp, dir_fd=cur)
                    if target.startswith("/"):
                        msg = f"parent {comp!r} is an absolute symbolic link ({target!r})"
                        raise _breakout(entry, msg)
                    links += 1
                    if links > _MAX_LINKS:
                        raise _breakout(entry, "too many levels of symbolic links")
                    pending.extend(reversed([c for c in target.split("/") if c not in {"", "."}]))
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    msg = f"parent {comp!r} is not a directory"
                    raise InvalidArgumentError(f"cannot extract {entry!r}: {msg}")
                try:
                    stack.append(os.open(comp, _DIR_FLAGS, dir_fd=cur))
                except OSError as exc:
                    if exc.errno == errno.ELOOP:
                        raise _breakout(entry, f"{comp!r} changed into a symbolic link") from exc
                    raise
            result = stack.pop()
        except BaseException:
            for fd in stack[1:]:
                os.close(fd)
            raise
        for fd in stack[1:]:
            os.close(fd)
        return result


def _proc(fd: int, name: str) -> str:
    return f"/proc/self/fd/{fd}/{name}"


def _remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` in ``dir_fd`` whatever it is (directories recursively, no following)."""
    try:
        st = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _xattrs(info: tarfile.TarInfo) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for key, value in info.pax_headers.items():
        if key.startswith(_XATTR_PREFIX):
            out[key.removeprefix(_XATTR_PREFIX)] = value.encode("utf-8", "surrogateescape")
    return out


def _mtime_ns(info: tarfile.TarInfo) -> tuple[int, int]:
    def ns(text: str | None, fallback: float) -> int:
        if text:
            with contextlib.suppress(ValueError):
                whole, _, frac = text.partition(".")
                return int(whole) * 1_000_000_000 + int((frac + "000000000")[:9] or 0)
        return int(fallback * 1_000_000_000)

    mtime = ns(info.pax_headers.get("mtime"), float(info.mtime))
    atime = ns(info.pax_headers.get("atime"), mtime / 1e9)
    return atime, mtime


@dataclass
class _Applier:
    root: _Root
    stream: tarfile.TarFile
    #: paths created by this layer (kept when a directory turns opaque)
    unpacked: set[str] = field(default_factory=set)
    dir_times: list[tuple[str, tuple[int, int]]] = field(default_factory=list)

    def run(self) -> None:
        for info in self.stream:
            self.entry(info)
        for rel, times in reversed(self.dir_times):
            with (
                contextlib.suppress(FileNotFoundError),
                self.root.parent_of(rel, entry=rel, create=False) as (dfd, base),
            ):
                os.utime(base or ".", ns=times, dir_fd=dfd, follow_symlinks=False)

    def entry(self, info: tarfile.TarInfo) -> None:
        rel = clean_name(info.name)
        if not rel:
            self.root_metadata(info)
            return
        parent, _, base = rel.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parent, base, info.name)
            return
        with self.root.parent_of(rel, entry=info.name) as (dfd, name):
            self.create(info, dfd, name, rel)
        self.unpacked.add(rel)

    def root_metadata(self, info: tarfile.TarInfo) -> None:
        if info.isdir():
            self.metadata(info, self.root.fd, ".")
            self.dir_times.append(("", _mtime_ns(info)))

    def whiteout(self, parent: str, base: str, name: str) -> None:
        try:
            dfd = self.root.open_dir(parent, entry=name, create=False)
        except (FileNotFoundError, NotADirectoryError):
            return
        try:
            if base == OPAQUE_WHITEOUT:
                for child in os.listdir(dfd):
                    path = f"{parent}/{child}" if parent else child
                    if path not in self.unpacked:
                        _remove(dfd, child)
                return
            target = base.removeprefix(WHITEOUT_PREFIX)
            if target in {"", ".", ".."} or "/" in target:
                raise _breakout(name, "invalid whiteout")
            _remove(dfd, target)
        finally:
            if dfd != self.root.fd:
                os.close(dfd)

    def create(self, info: tarfile.TarInfo, dfd: int, name: str, rel: str) -> None:
        try:
            existing = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (info.isdir() and stat.S_ISDIR(existing.st_mode)):
            _remove(dfd, name)
        if info.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(name, 0o700, dir_fd=dfd)
            self.metadata(info, dfd, name)
            self.dir_times.append((rel, _mtime_ns(info)))
            return
        if info.isreg():
            self.regular(info, dfd, name)
        elif info.issym():
            os.symlink(info.linkname, name, dir_fd=dfd)
        elif info.islnk():
            self.hardlink(info, dfd, name)
            return
        elif info.ischr() or info.isblk() or info.isfifo():
            kind = stat.S_IFCHR if info.ischr() else stat.S_IFBLK if info.isblk() else stat.S_IFIFO
            os.mknod(name, kind | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=dfd)
        else:
            log.warning("skipping tar entry %r of unsupported type %r", info.name, info.type)
            return
        self.metadata(info, dfd, name)

    def regular(self, info: tarfile.TarInfo, dfd: int, name: str) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(name, flags, 0o600, dir_fd=dfd)
        with os.fdopen(fd, "wb") as out:
            src = self.stream.extractfile(info)
            if src is not None:
                while chunk := src.read(_CHUNK):
                    out.write(chunk)

    def hardlink(self, info: tarfile.TarInfo, dfd: int, name: str) -> None:
        target = clean_name(info.linkname)
        if not target:
            raise _breakout(info.name, "hard link to the target directory itself")
        with self.root.parent_of(target, entry=info.name, create=False) as (tfd, tname):
            try:
                os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError as exc:
                msg = f"cannot extract {info.name!r}: hard link target {info.linkname!r} missing"
                raise InvalidArgumentError(msg) from exc

    def metadata(self, info: tarfile.TarInfo, dfd: int, name: str) -> None:
        is_link = info.issym()
        try:
            os.chown(name, info.uid, info.gid, dir_fd=dfd, follow_symlinks=False)
        except PermissionError:
            log.debug("cannot chown %r to %d:%d", info.name, info.uid, info.gid)
        if not is_link:
            os.chmod(_proc(dfd, name), stat.S_IMODE(info.mode))
        for key, value in _xattrs(info).items():
            try:
                os.setxattr(_proc(dfd, name), key, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}:
                    raise
                log.debug("xattr %s of %r not applied: %s", key, info.name, exc)
        if not info.isdir():
            os.utime(name, ns=_mtime_ns(info), dir_fd=dfd, follow_symlinks=False)


def apply_tar(stream: IO[bytes], target: str | os.PathLike[str]) -> None:
    """Extract the uncompressed layer ``stream`` into ``target`` (streaming).

    Raises:
        InvalidArgumentError: an entry would write outside ``target``, or the
            archive is malformed.
    """
    root = _Root(os.fspath(target))
    try:
        with tarfile.open(fileobj=stream, mode="r|", errorlevel=2) as tar:
            _Applier(root, tar).run()
    except tarfile.TarError as exc:
        msg = f"invalid layer archive: {exc}"
        raise InvalidArgumentError(msg) from exc
    finally:
        root.close()


# --- writing a diff ---------------------------------------------------------------------


def _list(path: str) -> dict[str, os.stat_result]:
    try:
        with os.scandir(path) as it:
            return {e.name: e.stat(follow_symlinks=False) for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _xattrs_of(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in sorted(names):
        with contextlib.suppress(OSError):
            out[name] = os.getxattr(path, name, follow_symlinks=False)
    return out


def _same_content(a: str, b: str, sa: os.stat_result, sb: os.stat_result) -> bool:
    if stat.S_ISLNK(sa.st_mode):
        return os.readlink(a) == os.readlink(b)
    if not stat.S_ISREG(sa.st_mode):
        return True
    if sa.st_size != sb.st_size:
        return False
    if sa.st_mtime_ns == sb.st_mtime_ns and sa.st_mtime_ns % 1_000_000_000:
        return True  # same size and a sub-second mtime: trust it, as containerd does
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def _changed(a: str, b: str, sa: os.stat_result, sb: os.stat_result) -> bool:
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return True
    owner_a = (sa.st_mode, sa.st_uid, sa.st_gid, sa.st_rdev, sa.st_mtime_ns)
    owner_b = (sb.st_mode, sb.st_uid, sb.st_gid, sb.st_rdev, sb.st_mtime_ns)
    if owner_a != owner_b:
        return True
    if _xattrs_of(a) != _xattrs_of(b):
        return True
    return not _same_content(a, b, sa, sb)


@dataclass
class _DiffWriter:
    tar: tarfile.TarFile
    upper: str
    epoch: int | None
    links: dict[tuple[int, int], str] = field(default_factory=dict)
    written_dirs: set[str] = field(default_factory=set)

    def clamp(self, mtime_ns: int) -> int:
        if self.epoch is not None and mtime_ns > self.epoch * 1_000_000_000:
            return self.epoch * 1_000_000_000
        return mtime_ns

    def parents(self, rel: str) -> None:
        parent = posixpath.dirname(rel)
        if not parent or parent in self.written_dirs:
            return
        self.parents(parent)
        path = os.path.join(self.upper, parent)
        self.add(parent, path, os.lstat(path))

    def whiteout(self, rel: str, mtime_ns: int) -> None:
        self.parents(rel)
        parent, base = posixpath.split(rel)
        info = tarfile.TarInfo(posixpath.join(parent, WHITEOUT_PREFIX + base))
        info.mtime = self.clamp(mtime_ns) // 1_000_000_000
        info.mode = 0o644
        self.tar.addfile(info)

    def add(self, rel: str, path: str, st: os.stat_result) -> None:
        self.parents(rel)
        info = tarfile.TarInfo(rel)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        mtime = self.clamp(st.st_mtime_ns)
        info.mtime = mtime // 1_000_000_000
        pax: dict[str, str] = {}
        if mtime % 1_000_000_000:
            pax["mtime"] = f"{mtime // 1_000_000_000}.{mtime % 1_000_000_000:09d}".rstrip("0")
        for attr, value in _xattrs_of(path).items():
            pax[_XATTR_PREFIX + attr] = value.decode("utf-8", "surrogateescape")
        info.pax_headers = pax
        mode = st.st_mode
        key = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in self.links:
            info.type = tarfile.LNKTYPE
            info.linkname = self.links[key]
            self.tar.addfile(info)
            return
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
            self.written_dirs.add(rel)
            self.tar.addfile(info)
            return
        if stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        elif stat.S_ISSOCK(mode):
            log.info("skipping socket %s in diff", path)
            return
        elif stat.S_ISREG(mode):
            info.size = st.st_size
            if st.st_nlink > 1:
                self.links[key] = rel
            with open(path, "rb") as src:
                self.tar.addfile(info, src)
            return
        if st.st_nlink > 1:
            self.links[key] = rel
        self.tar.addfile(info)

    def walk(self, lower: str | None, upper: str, rel: str) -> None:
        lower_entries = _list(lower) if lower is not None else {}
        upper_entries = _list(upper)
        for name in sorted(lower_entries.keys() - upper_entries.keys()):
            self.whiteout(posixpath.join(rel, name), os.lstat(upper).st_mtime_ns)
        for name in sorted(upper_entries):
            child = posixpath.join(rel, name)
            up = os.path.join(upper, name)
            su = upper_entries[name]
            sl = lower_entries.get(name)
            low = os.path.join(lower, name) if lower is not None and sl is not None else None
            if sl is None or low is None:
                self.add(child, up, su)
                if stat.S_ISDIR(su.st_mode):
                    self.walk(None, up, child)
                continue
            if stat.S_ISDIR(su.st_mode) and not stat.S_ISDIR(sl.st_mode):
                self.add(child, up, su)
                self.walk(None, up, child)
                continue
            if _changed(low, up, sl, su):
                self.add(child, up, su)
            if stat.S_ISDIR(su.st_mode):
                self.walk(low, up, child)


def write_diff(
    out: IO[bytes],
    lower: str | os.PathLike[str],
    upper: str | os.PathLike[str],
    *,
    source_date_epoch: int | None = None,
) -> None:
    """Write to ``out`` the tar that turns tree ``lower`` into tree ``upper``.

    Added and changed entries are written with their metadata (parent
    directories included), removed ones as ``.wh.<name>`` whiteouts; hard
    links within the diff stay hard links. ``source_date_epoch`` clamps
    modification times, for reproducible layers.
    """
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        writer = _DiffWriter(tar, os.fspath(upper), source_date_epoch)
        writer.walk(os.fspath(lower), os.fspath(upper), "")
