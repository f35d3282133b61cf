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
    from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = [
    "OPAQUE_WHITEOUT",
    "WHITEOUT_PREFIX",
    "Entry",
    "OverlayUpper",
    "TarReader",
    "apply_chunks",
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
        #: called as ``on_mkdir(parent_fd, name, rel)`` after a missing directory is made
        self.on_mkdir: Callable[[int, str, str], None] | None = None

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
        names: list[str] = []  # the path of stack[-1] inside the root, by components
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
                    names.pop()
                    continue
                cur = stack[-1]
                try:
                    st = os.lstat(comp, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=cur)
                    if self.on_mkdir is not None:
                        self.on_mkdir(cur, comp, "/".join([*names, comp]))
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
                    names.append(comp)
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


# --- reading a tar stream ---------------------------------------------------------------

_BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(_BLOCK)
#: largest PAX or GNU long-name record accepted (as Go's archive/tar)
_MAX_SPECIAL: Final = 1 << 20

_REG: Final = frozenset(b"07")  # regular (and contiguous) files; b"\0" is handled apart
_LNK: Final = ord("1")
_SYM: Final = ord("2")
_CHR: Final = ord("3")
_BLK: Final = ord("4")
_DIR: Final = ord("5")
_FIFO: Final = ord("6")
_OLD_REG: Final = 0
_PAX: Final = ord("x")
_PAX_GLOBAL: Final = ord("g")
_GNU_LONGNAME: Final = ord("L")
_GNU_LONGLINK: Final = ord("K")
_GNU_SPARSE: Final = ord("S")
_USTAR_MAGIC: Final = b"ustar\x0000"
_EXTENDED: Final = frozenset({_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK})


def _invalid(why: str) -> InvalidArgumentError:
    return InvalidArgumentError(f"invalid layer archive: {why}")


def _text(field: bytes) -> str:
    return field.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A numeric header field: NUL/space padded octal, or base-256 (high bit set)."""
    first = field[0]
    if first & 0x80:
        if first == 0x80:
            return int.from_bytes(field[1:], "big")
        if first == 0xFF:
            return int.from_bytes(field, "big", signed=True)
        raise _invalid(f"bad base-256 number {field!r}")
    digits = field.partition(b"\0")[0].strip(b" ")
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        raise _invalid(f"bad octal number {field!r}") from None


def _checksum_ok(block: bytes) -> bool:
    """Whether the stored checksum matches the header's byte sum (unsigned or signed)."""
    stored = _number(block[148:156])
    field = block[148:156]
    unsigned = sum(block) - sum(field) + 8 * 0x20
    if stored == unsigned:
        return True
    high = sum(1 for b in block if b & 0x80) - sum(1 for b in field if b & 0x80)
    return stored == unsigned - 256 * high


def _pax_time(text: str) -> int:
    """A PAX time (decimal seconds, maybe fractional or negative) in nanoseconds."""
    negative = text.startswith("-")
    whole, _, frac = text.removeprefix("-").partition(".")
    if not whole.isdigit() or (frac and not frac.isdigit()):
        raise _invalid(f"bad PAX time {text!r}")
    ns = int(whole) * 1_000_000_000 + int((frac + "000000000")[:9])
    return -ns if negative else ns


def _pax_records(data: bytes) -> dict[str, bytes]:
    """The ``<len> <key>=<value>`` records (newline-terminated) of a PAX extended header."""
    out: dict[str, bytes] = {}
    pos, end = 0, len(data)
    while pos < end and data[pos]:
        space = data.find(b" ", pos, pos + 20)
        try:
            length = int(data[pos:space]) if space > pos else 0
        except ValueError:
            length = 0
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > end or not record.endswith(b"\n") or b"=" not in record:
            raise _invalid("malformed PAX record")
        key, _, value = record[:-1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value
        pos += length
    return out


class Entry:
    """One tar member, as much of it as applying a layer needs."""

    __slots__ = (
        "atime_ns",
        "devmajor",
        "devminor",
        "gid",
        "linkname",
        "mode",
        "mtime_ns",
        "name",
        "size",
        "type",
        "uid",
        "xattrs",
    )

    def __init__(self, name: str, type_: int, size: int) -> None:
        self.name = name
        self.type = type_
        self.size = size
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.mtime_ns = 0
        self.atime_ns = 0
        self.linkname = ""
        self.devmajor = 0
        self.devminor = 0
        self.xattrs: dict[str, bytes] = {}

    def isdir(self) -> bool:
        return self.type == _DIR

    def isreg(self) -> bool:
        return self.type in _REG


class TarReader:
    """A lean, strict, streaming reader of (uncompressed) tar archives.

    Reads ustar, GNU (long names and links) and PAX (path, linkpath, size,
    uid, gid, mtime, ``SCHILY.xattr.*``) headers from an iterator of byte
    chunks of any size. Global PAX headers are ignored, as containerd does;
    GNU sparse files are refused. A bad checksum, a truncated header or
    truncated file data raise :class:`InvalidArgumentError`. Stops at the
    first all-zero block (or at the end of the stream on a header boundary).
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self._pending = 0  # data + padding of the current entry not yet consumed

    def _more(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf, self._pos = chunk, 0
                return True
        self._buf, self._pos = b"", 0
        return False

    def _take(self, n: int) -> bytes:
        """Exactly ``n`` bytes (``b""`` when the stream ended right here)."""
        pos = self._pos
        if pos + n <= len(self._buf):
            self._pos = pos + n
            return self._buf[pos : pos + n]
        parts = [self._buf[pos:]]
        have = len(parts[0])
        while have < n:
            if not self._more():
                if have == 0:
                    return b""
                raise _invalid("unexpected end of data")
            piece = self._buf[: n - have]
            self._pos = len(piece)
            parts.append(piece)
            have += len(piece)
        return b"".join(parts)

    def _skip(self, n: int) -> None:
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._more():
                    raise _invalid("unexpected end of data")
                continue
            step = min(avail, n)
            self._pos += step
            n -= step

    def _special(self, size: int) -> bytes:
        if size > _MAX_SPECIAL:
            raise _invalid(f"extended header of {size} bytes is too large")
        data = self._take(size) if size else b""
        if len(data) != size:
            raise _invalid("unexpected end of data")
        self._skip(-size % _BLOCK)
        return data

    def skip_data(self) -> None:
        """Skip what is left of the current entry's data."""
        n, self._pending = self._pending, 0
        self._skip(n)

    def write_data(self, entry: Entry, fd: int) -> None:
        """Write the current entry's data (``entry.size`` bytes) to ``fd``."""
        left = entry.size
        while left > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._more():
                    raise _invalid(f"unexpected end of data in {entry.name!r}")
                continue
            step = min(avail, left)
            view = memoryview(self._buf)[self._pos : self._pos + step]
            while view:
                view = view[os.write(fd, view) :]
            self._pos += step
            left -= step
        self._pending -= entry.size

    def __iter__(self) -> Iterator[Entry]:
        return self

    def _headers(self) -> tuple[bytes, dict[str, bytes], str | None, str | None] | None:
        """The next member's header block, its PAX records, GNU long name and link."""
        pax: dict[str, bytes] = {}
        long_name: str | None = None
        long_link: str | None = None
        while True:
            block = self._take(_BLOCK)
            if not block or block == _ZERO_BLOCK:
                return None
            if not _checksum_ok(block):
                raise _invalid("bad header checksum")
            kind = block[156]
            if kind not in _EXTENDED:
                return block, pax, long_name, long_link
            size = _number(block[124:136])
            if size < 0:
                raise _invalid("negative size")
            data = self._special(size)
            if kind == _PAX:
                pax.update(_pax_records(data))
            elif kind == _GNU_LONGNAME:
                long_name = _text(data)
            elif kind == _GNU_LONGLINK:
                long_link = _text(data)
            # a global PAX header is ignored, as containerd does

    def __next__(self) -> Entry:  # noqa: PLR0912
        if self._pending:
            self.skip_data()
        headers = self._headers()
        if headers is None:
            raise StopIteration
        block, pax, long_name, long_link = headers
        kind = block[156]
        if kind == _GNU_SPARSE or any(k.startswith("GNU.sparse.") for k in pax):
            raise _invalid("sparse files are not supported")
        name = long_name if long_name is not None else _text(block[0:100])
        if long_name is None and block[257:265] == _USTAR_MAGIC and block[345]:
            name = _text(block[345:500]) + "/" + name
        if "path" in pax:
            name = pax["path"].decode("utf-8", "surrogateescape")
        if kind == _OLD_REG:
            kind = _DIR if name.endswith("/") else ord("0")
        size = _pax_int(pax["size"]) if "size" in pax else _number(block[124:136])
        if size < 0:
            raise _invalid("negative size")
        entry = Entry(name, kind, size)
        entry.mode = _number(block[100:108])
        entry.uid = _pax_int(pax["uid"]) if "uid" in pax else _number(block[108:116])
        entry.gid = _pax_int(pax["gid"]) if "gid" in pax else _number(block[116:124])
        if "mtime" in pax:
            entry.mtime_ns = _pax_time(pax["mtime"].decode("ascii", "replace"))
        else:
            entry.mtime_ns = _number(block[136:148]) * 1_000_000_000
        entry.atime_ns = entry.mtime_ns  # the later of the two, as containerd
        if "atime" in pax:
            entry.atime_ns = max(entry.mtime_ns, _pax_time(pax["atime"].decode("ascii", "replace")))
        if long_link is not None:
            entry.linkname = long_link
        elif "linkpath" in pax:
            entry.linkname = pax["linkpath"].decode("utf-8", "surrogateescape")
        else:
            entry.linkname = _text(block[157:257])
        if kind in {_CHR, _BLK}:
            entry.devmajor = _number(block[329:337])
            entry.devminor = _number(block[337:345])
        for key, value in pax.items():
            if key.startswith(_XATTR_PREFIX):
                entry.xattrs[key.removeprefix(_XATTR_PREFIX)] = value
        if kind in _REG or kind not in _KNOWN:
            self._pending = size + (-size % _BLOCK)
        else:  # links, directories, devices and FIFOs carry no data, whatever the size says
            entry.size = 0
        return entry


_KNOWN: Final = frozenset({*_REG, _LNK, _SYM, _CHR, _BLK, _DIR, _FIFO})


def _pax_int(value: bytes) -> int:
    try:
        n = int(value)
    except ValueError:
        raise _invalid(f"bad PAX number {value!r}") from None
    if n < 0:
        raise _invalid(f"negative PAX number {value!r}")
    return n


# --- applying ---------------------------------------------------------------------------

_FILE_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_SUPPORTED: Final = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})


@dataclass
class _Applier:
    root: _Root
    reader: TarReader
    #: paths created by this layer (kept when a directory turns opaque)
    unpacked: set[str] = field(default_factory=set)
    dir_times: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    #: the last parent directory opened (relative path, fd): most entries share it
    cached: tuple[str, int] | None = None
    #: something was removed since ``cached`` was opened: resolve the next parent afresh
    stale: bool = False

    def run(self) -> None:
        try:
            for entry in self.reader:
                self.entry(entry)
        finally:
            self.close_cached()
        for rel, times in reversed(self.dir_times):
            with (
                contextlib.suppress(FileNotFoundError),
                self.root.parent_of(rel, entry=rel, create=False) as (dfd, base),
            ):
                os.utime(base or ".", ns=times, dir_fd=dfd, follow_symlinks=False)

    def close_cached(self) -> None:
        if self.cached is not None:
            fd = self.cached[1]
            self.cached = None
            if fd != self.root.fd:
                os.close(fd)

    def parent(self, parent: str, entry: str) -> int:
        """The directory ``parent`` (created if missing), resolved safely from the root.

        Consecutive entries in one directory reuse its fd. That never widens
        what an entry can reach (the fd came from the same safe resolution and
        nothing is ever moved), but a removal or replacement can change what a
        name resolves to, so any such change marks the cache stale and the
        next entry resolves again from the root.
        """
        cached = self.cached
        if cached is not None and not self.stale and cached[0] == parent:
            return cached[1]
        fd = self.root.open_dir(parent, entry=entry, create=True)
        self.close_cached()
        self.cached, self.stale = (parent, fd), False
        return fd

    def entry(self, info: Entry) -> None:
        rel = clean_name(info.name)
        if not rel:
            self.root_metadata(info)
            return
        parent, _, base = rel.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self.stale = True
            self.whiteout(parent, base, info.name)
            return
        dfd = self.parent(parent, info.name)
        if info.type in _REG:
            self.regular(info, dfd, base)
        else:
            self.create(info, dfd, base, rel)
        self.unpacked.add(rel)

    def root_metadata(self, info: Entry) -> None:
        if info.isdir():
            self.metadata(info, self.root.fd, ".")
            self.dir_times.append(("", (info.atime_ns, info.mtime_ns)))

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

    def create(self, info: Entry, dfd: int, name: str, rel: str) -> None:
        try:
            existing = os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            existing = None
        is_dir = info.type == _DIR
        if existing is not None and not (is_dir and stat.S_ISDIR(existing.st_mode)):
            self.stale = True
            _remove(dfd, name)
        kind = info.type
        if is_dir:
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(name, 0o700, dir_fd=dfd)
            self.metadata(info, dfd, name)
            self.dir_times.append((rel, (info.atime_ns, info.mtime_ns)))
            return
        if kind == _SYM:
            os.symlink(info.linkname, name, dir_fd=dfd)
        elif kind == _LNK:
            self.hardlink(info, dfd, name)
            return
        elif kind in {_CHR, _BLK, _FIFO}:
            fmt = stat.S_IFCHR if kind == _CHR else stat.S_IFBLK if kind == _BLK else stat.S_IFIFO
            os.mknod(name, fmt | 0o600, os.makedev(info.devmajor, info.devminor), dir_fd=dfd)
        else:
            log.warning("skipping tar entry %r of unsupported type %r", info.name, chr(kind))
            return
        self.metadata(info, dfd, name)

    def regular(self, info: Entry, dfd: int, name: str) -> None:
        try:
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dfd)
        except FileExistsError:
            self.stale = True
            _remove(dfd, name)
            fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=dfd)
        try:
            if info.size:
                self.reader.write_data(info, fd)
            try:
                os.fchown(fd, info.uid, info.gid)
            except PermissionError:
                log.debug("cannot chown %r to %d:%d", info.name, info.uid, info.gid)
            os.fchmod(fd, stat.S_IMODE(info.mode))
            for key, value in info.xattrs.items():
                try:
                    os.setxattr(fd, key, value)
                except OSError as exc:
                    if exc.errno not in _NOT_SUPPORTED:
                        raise
                    log.debug("xattr %s of %r not applied: %s", key, info.name, exc)
            os.utime(fd, ns=(info.atime_ns, info.mtime_ns))
        finally:
            os.close(fd)

    def hardlink(self, info: Entry, dfd: int, name: str) -> None:
        target = clean_name(info.linkname)
        if not target:
            raise _breakout(info.name, "hard link to the target directory itself")
        with self.root.parent_of(target, entry=info.name, create=False) as (tfd, tname):
            try:
                os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError as exc:
                msg = f"cannot extract {info.name!r}: hard link target {info.linkname!r} missing"
                raise InvalidArgumentError(msg) from exc

    def metadata(self, info: Entry, dfd: int, name: str) -> None:
        is_link = info.type == _SYM
        try:
            os.chown(name, info.uid, info.gid, dir_fd=dfd, follow_symlinks=False)
        except PermissionError:
            log.debug("cannot chown %r to %d:%d", info.name, info.uid, info.gid)
        if not is_link:
            os.chmod(_proc(dfd, name), stat.S_IMODE(info.mode))
        for key, value in info.xattrs.items():
            try:
                os.setxattr(_proc(dfd, name), key, value, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _NOT_SUPPORTED:
                    raise
                log.debug("xattr %s of %r not applied: %s", key, info.name, exc)
        if info.type != _DIR:
            times = (info.atime_ns, info.mtime_ns)
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

    A whiteout becomes a 0/0 character device, an opaque directory gets the
    ``<prefix>opaque=y`` attribute.
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
                dst = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
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

    def whiteout(self, parent: str, base: str, name: str) -> None:
        dfd = self.parent(parent, name)
        if base == OPAQUE_WHITEOUT:
            for child in os.listdir(dfd):
                path = f"{parent}/{child}" if parent else child
                if path not in self.unpacked:
                    _remove(dfd, child)
            os.setxattr(dfd, self.overlay.xattr_prefix + "opaque", b"y")
            self.stale = True
            return
        target = base.removeprefix(WHITEOUT_PREFIX)
        if target in {"", ".", ".."} or "/" in target:
            raise _breakout(name, "invalid whiteout")
        _remove(dfd, target)
        os.mknod(target, stat.S_IFCHR, 0, dir_fd=dfd)
        self.stale = True

    def hardlink(self, info: Entry, dfd: int, name: str) -> None:
        """Link within the upper directory, copying the target up from a lower one first.

        (Through a mounted overlay the kernel would copy it up on ``link``.)
        """
        target = clean_name(info.linkname)
        if not target:
            raise _breakout(info.name, "hard link to the target directory itself")
        missing = f"cannot extract {info.name!r}: hard link target {info.linkname!r} missing"
        parent, _, base = target.rpartition("/")
        try:
            tfd = self.root.open_dir(parent, entry=info.name, create=False)
        except (FileNotFoundError, NotADirectoryError):
            tfd = None
        try:
            st = None
            if tfd is not None:
                with contextlib.suppress(FileNotFoundError):
                    st = os.lstat(base, dir_fd=tfd)
            if st is None:
                if not self.copy_up(target, info.name):
                    raise InvalidArgumentError(missing)
                if tfd is None:
                    tfd = self.root.open_dir(parent, entry=info.name, create=False)
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:  # a whiteout: removed
                raise InvalidArgumentError(missing)
            os.link(base, name, src_dir_fd=tfd, dst_dir_fd=dfd, follow_symlinks=False)
        finally:
            if tfd is not None and tfd != self.root.fd:
                os.close(tfd)

    def copy_up(self, rel: str, entry: str) -> bool:
        """Copy ``rel`` from the nearest lower that shows it into the upper directory."""
        parent, _, base = rel.rpartition("/")
        for lower in self.overlay.lowers:
            try:
                root = _Root(lower)
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
                    if pfd != root.fd:
                        os.close(pfd)
            finally:
                root.close()
        return False

    def copy_file(self, src_dir: int, base: str, st: os.stat_result, rel: str, entry: str) -> None:
        src = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
        try:
            with self.root.parent_of(rel, entry=entry, create=True) as (dfd, name):
                self.stale = True  # parents may have been made
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
            os.close(src)


_REPLACED: Final = -1


def _try_open_dir(root: _Root, rel: str, entry: str) -> int | None:
    """Directory ``rel`` of a lower root, or ``None`` if it is not there (or escapes)."""
    try:
        return root.open_dir(rel, entry=entry, create=False)
    except (OSError, InvalidArgumentError):
        return None


def _open_lower_dir(lower: str, rel: str) -> int | None:
    """An fd of directory ``rel`` in ``lower``, resolved inside it.

    ``None`` when nothing is there, :data:`_REPLACED` when something other
    than a directory is.
    """
    try:
        root = _Root(lower)
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
            if pfd != root.fd:
                os.close(pfd)
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

    Stops at the archive's end marker: the caller drains whatever follows.
    With ``overlay``, ``target`` is an overlay's upper directory and whiteouts
    are written the way overlayfs records them (containerd does the same for
    its overlayfs snapshotter instead of mounting the overlay).

    Raises:
        InvalidArgumentError: an entry would write outside ``target``, or the
            archive is malformed.
    """
    root = _Root(os.fspath(target))
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
        InvalidArgumentError: an entry would write outside ``target``, or the
            archive is malformed.
    """
    apply_chunks(iter(lambda: stream.read(_CHUNK), b""), target)


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
