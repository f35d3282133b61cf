"""Writing the layer between two trees, byte for byte as containerd writes it.

:func:`write_diff` walks a lower and an upper tree side by side and writes
the tar that turns the first into the second, the way containerd's walking
differ does (continuity's double walk and containerd's change writer), so the
same change gives the same diff ID on both daemons:

* entries come in the order of a depth-first walk with names sorted
  bytewise; a name only in the lower tree becomes a ``.wh.<name>`` whiteout
  (a regular file, mode 0, owner 0:0, time 0), a removed directory one
  whiteout and nothing below it;
* a file counts as changed when its type, mode, owner, device number,
  ``security.capability``, size or modification time differ (contents are
  compared when both times are whole seconds); a directory when its mode,
  owner or ``security.capability`` differ; a changed entry's parent
  directories are written before it when not written already;
* headers are what Go's ``archive/tar`` writes in PAX format: ustar fields,
  modification time truncated to the second, no access or change time, no
  user or group names, a PAX extended header (named ``PaxHeaders.0/...``)
  only for what ustar cannot hold and for ``SCHILY.xattr.security.capability``
  (the only extended attribute carried); hard links within the diff are
  ``1`` entries; two zero blocks end the stream, without record padding.

The walk holds a bounded number of open files and does not recurse, so a
tree of any depth diffs.

All functions here are blocking; call them from a worker thread.
Importing this module must not import grpc.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import IO, Final

from pycontainerd.snapshots.fsutil import DIR_FLAGS, TreeCursor, open_below

__all__ = ["GoTarWriter", "write_diff"]

log = logging.getLogger(__name__)

_BLOCK: Final = 512
_ZERO: Final = bytes(_BLOCK)
_CHUNK: Final = 1 << 20
_CAPABILITY: Final = "security.capability"
_PAX_CAPABILITY: Final = b"SCHILY.xattr." + _CAPABILITY.encode()
_USTAR_MAGIC: Final = b"ustar\x0000"
_NAME: Final = 100
_PREFIX: Final = 155
_REG: Final = ord("0")
_LNK: Final = ord("1")
_SYM: Final = ord("2")
_CHR: Final = ord("3")
_BLK: Final = ord("4")
_DIR: Final = ord("5")
_FIFO: Final = ord("6")
_PAX: Final = ord("x")
_NO_DATA: Final = frozenset({_LNK, _SYM, _CHR, _BLK, _DIR, _FIFO})


def _fits(value: int, width: int) -> bool:
    limit: int = 8 ** (width - 1)
    return 0 <= value < limit


def _octal(value: int, width: int) -> bytes:
    """Go's ``formatOctal``: zero-padded octal and a NUL; 0 when it does not fit."""
    if not _fits(value, width):
        value = 0
    return b"%0*o\0" % (width - 1, value)


def _field(text: bytes, width: int) -> bytes:
    """Go's ``formatString``: cut to the field, NUL-padded; a cut name ends without '/'."""
    if len(text) < width:
        return text + bytes(width - len(text))
    out = bytearray(text[:width])
    if len(text) > width and out[-1] == ord("/"):
        out[len(text[: width - 1].rstrip(b"/"))] = 0
    return bytes(out)


def _ascii(text: bytes) -> bytes:
    """Go's ``toASCII``: every non-ASCII character dropped."""
    return text if text.isascii() else bytes(b for b in text if b < 0x80)


def _split_ustar(name: bytes) -> tuple[bytes, bytes] | None:
    """Go's ``splitUSTARPath``: ``(prefix, name)`` for a long ASCII path, if it splits."""
    length = len(name)
    if length <= _NAME or not name.isascii():
        return None
    if length > _PREFIX + 1:
        length = _PREFIX + 1
    elif name[length - 1] == ord("/"):
        length -= 1
    i = name.rfind(b"/", 0, length)
    suffix_len = len(name) - i - 1
    if i <= 0 or suffix_len > _NAME or suffix_len == 0 or i > _PREFIX:
        return None
    return name[:i], name[i + 1 :]


def _pax_record(key: bytes, value: bytes) -> bytes:
    size = len(key) + len(value) + 3
    size += len(str(size))
    record = b"%d %s=%s\n" % (size, key, value)
    if len(record) != size:
        record = b"%d %s=%s\n" % (len(record), key, value)
    return record


def _checksummed(block: bytearray) -> bytes:
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


class GoTarWriter:
    """Tar headers and data exactly as Go's ``archive/tar`` Writer lays them out."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def header(
        self,
        name: bytes,
        typeflag: int,
        *,
        mode: int = 0,
        uid: int = 0,
        gid: int = 0,
        size: int = 0,
        mtime: int = 0,
        linkname: bytes = b"",
        devmajor: int = 0,
        devminor: int = 0,
        records: dict[bytes, bytes] | None = None,
        pax: bool = True,
    ) -> None:
        """Write one entry's header, after a PAX header when ustar cannot hold it.

        ``pax=False`` lets the format be chosen as Go does without one set
        (ustar first, its name prefix used); ``True`` is Go's explicit PAX.
        """
        pax_hdrs: dict[bytes, bytes] = {}
        prefix = b""
        long_name = len(name) > _NAME or not name.isascii()
        if long_name:
            split = None if pax else _split_ustar(name)
            if split is None:
                pax_hdrs[b"path"] = name
            else:
                prefix, name = split
        if len(linkname) > _NAME or not linkname.isascii():
            pax_hdrs[b"linkpath"] = linkname
        if not _fits(uid, 8):
            pax_hdrs[b"uid"] = b"%d" % uid
        if not _fits(gid, 8):
            pax_hdrs[b"gid"] = b"%d" % gid
        if not _fits(size, 12):
            pax_hdrs[b"size"] = b"%d" % size
        if not _fits(mtime, 12):
            pax_hdrs[b"mtime"] = b"%d" % mtime
        for key, value in (records or {}).items():
            pax_hdrs.setdefault(key, value)
        if pax_hdrs:
            data = b"".join(_pax_record(k, pax_hdrs[k]) for k in sorted(pax_hdrs))
            head, _, tail = name.rpartition(b"/")
            pax_name = b"/".join(p for p in (head, b"PaxHeaders.0", tail) if p)
            self._raw_file(_ascii(pax_name)[:_NAME].rstrip(b"/"), data)
            name, linkname, prefix = _ascii(name), _ascii(linkname), b""
        block = bytearray(_BLOCK)
        block[0:100] = _field(name, 100)
        block[100:108] = _octal(mode, 8)
        block[108:116] = _octal(uid, 8)
        block[116:124] = _octal(gid, 8)
        block[124:136] = _octal(size, 12)
        block[136:148] = _octal(mtime, 12)
        block[156] = typeflag
        block[157:257] = _field(linkname, 100)
        block[257:265] = _USTAR_MAGIC
        block[329:337] = _octal(devmajor, 8)
        block[337:345] = _octal(devminor, 8)
        if prefix:
            block[345:500] = _field(prefix, 155)
        self.out.write(_checksummed(block))

    def _raw_file(self, name: bytes, data: bytes) -> None:
        block = bytearray(_BLOCK)
        block[0:100] = _field(name, 100)
        block[100:108] = _octal(0, 8)
        block[108:116] = _octal(0, 8)
        block[116:124] = _octal(0, 8)
        block[124:136] = _octal(len(data), 12)
        block[136:148] = _octal(0, 12)
        block[156] = _PAX
        block[257:265] = _USTAR_MAGIC
        self.out.write(_checksummed(block))
        self.out.write(data)
        self.pad(len(data))

    def pad(self, size: int) -> None:
        """The zeros that round ``size`` bytes of data up to a block."""
        if size % _BLOCK:
            self.out.write(_ZERO[: -size % _BLOCK])

    def close(self) -> None:
        """The end of the archive: two zero blocks."""
        self.out.write(_ZERO + _ZERO)


def _capability(dir_fd: int, name: str) -> bytes:
    try:
        return os.getxattr(f"/proc/self/fd/{dir_fd}/{name}", _CAPABILITY, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT}:
            return b""
        raise


def _same_content(lfd: int, ufd: int, name: str) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    a = os.open(name, flags, dir_fd=lfd)
    try:
        b = os.open(name, flags, dir_fd=ufd)
        try:
            while True:
                ca, cb = os.read(a, _CHUNK), os.read(b, _CHUNK)
                if ca != cb:
                    return False
                if not ca:
                    return True
        finally:
            os.close(b)
    finally:
        os.close(a)


def _same_file(  # noqa: PLR0911
    lfd: int, ufd: int, name: str, sl: os.stat_result, su: os.stat_result
) -> bool:
    """Continuity's ``sameFile``: what makes an entry present in both trees unchanged."""
    if sl.st_dev == su.st_dev and sl.st_ino == su.st_ino:
        return True
    if (sl.st_mode, sl.st_uid, sl.st_gid, sl.st_rdev) != (
        su.st_mode,
        su.st_uid,
        su.st_gid,
        su.st_rdev,
    ):
        return False
    if _capability(lfd, name) != _capability(ufd, name):
        return False
    if stat.S_ISDIR(su.st_mode):
        return True
    if sl.st_size != su.st_size:
        return False
    ls, lns = divmod(sl.st_mtime_ns, 1_000_000_000)
    us, uns = divmod(su.st_mtime_ns, 1_000_000_000)
    if ls != us:
        return False
    if lns == 0 and uns == 0:
        if stat.S_ISLNK(su.st_mode):
            return os.readlink(name, dir_fd=lfd) == os.readlink(name, dir_fd=ufd)
        if su.st_size == 0:
            return True
        return _same_content(lfd, ufd, name)
    return lns == uns


def _encode(rel: str) -> bytes:
    return rel.encode("utf-8", "surrogateescape")


_ADD, _MODIFY, _UNMODIFIED = range(3)


class _DiffWriter:
    """containerd's change writer, fed by a double walk of the two trees."""

    def __init__(self, out: IO[bytes], upper: int, epoch: int | None) -> None:
        self.tw = GoTarWriter(out)
        self.upper = upper
        self.epoch = epoch
        self.added_dirs: set[str] = set()
        self.inode_src: dict[tuple[int, int], bytes] = {}
        self.inode_refs: dict[tuple[int, int], list[bytes]] = {}
        #: the directories being walked, outermost first: (path, stat, capability)
        self.chain: list[tuple[str, os.stat_result, bytes]] = []

    def include_parents(self, rel: str) -> None:
        """Write the parent directories of ``rel`` not written yet (outermost first)."""
        missing: list[str] = []
        parent = rel.rpartition("/")[0]
        while parent and parent not in self.added_dirs:
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for path in reversed(missing):
            self.added_dirs.add(path)
            depth = path.count("/")
            if depth < len(self.chain) and self.chain[depth][0] == path:
                _, st, cap = self.chain[depth]
            else:  # a hard link's other name, elsewhere in the tree
                fd = open_below(self.upper, path)
                try:
                    st, cap = os.fstat(fd), _dir_capability(fd)
                finally:
                    os.close(fd)
            self.write_entry(path, st, kind=_MODIFY, cap=cap)

    def whiteout(self, rel: str) -> None:
        parent, _, base = rel.rpartition("/")
        name = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
        self.include_parents(name)
        self.tw.header(_encode(name), _REG, pax=False)

    def write_entry(  # noqa: PLR0912, PLR0915
        self,
        rel: str,
        st: os.stat_result,
        *,
        kind: int,
        cap: bytes | None = None,
        dir_fd: int | None = None,
        base: str | None = None,
    ) -> None:
        """Containerd's ``HandleChange`` for an added, modified or linked unmodified entry.

        ``dir_fd``/``base`` name the entry in the upper tree (``None`` for a
        directory from :attr:`chain`, whose capability is ``cap``).
        """
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            return
        link = b""
        size = 0
        if stat.S_ISDIR(mode):
            typeflag = _DIR
            name = _encode(rel) + b"/"
        else:
            name = _encode(rel)
            if stat.S_ISREG(mode):
                typeflag, size = _REG, st.st_size
            elif stat.S_ISLNK(mode):
                typeflag = _SYM
                link = os.fsencode(os.readlink(base or "", dir_fd=dir_fd))
            elif stat.S_ISCHR(mode):
                typeflag = _CHR
            elif stat.S_ISBLK(mode):
                typeflag = _BLK
            elif stat.S_ISFIFO(mode):
                typeflag = _FIFO
            else:
                log.warning("skipping %s in diff: unsupported file type %o", rel, mode)
                return
        extra: list[bytes] = []
        if typeflag != _DIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            source = self.inode_src.get(key)
            if source is not None:
                typeflag, link, size = _LNK, source, 0
            else:
                if kind == _UNMODIFIED:
                    self.inode_refs.setdefault(key, []).append(name)
                    return
                self.inode_src[key] = name
                extra = self.inode_refs.pop(key, [])
        elif kind == _UNMODIFIED:
            return
        if cap is None:
            cap = _capability(dir_fd, base) if dir_fd is not None and base is not None else b""
        records = {_PAX_CAPABILITY: cap} if cap else None
        mtime_ns = st.st_mtime_ns
        if self.epoch is not None and mtime_ns > self.epoch * 1_000_000_000:
            mtime_ns = self.epoch * 1_000_000_000
        mtime = mtime_ns // 1_000_000_000
        major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
        perm = stat.S_IMODE(mode)
        self.include_parents(rel)
        if typeflag == _DIR:
            self.added_dirs.add(rel)
        for entry_name, entry_type, entry_size, entry_link in (
            (name, typeflag, size, link),
            *((other, _LNK, 0, name) for other in extra),
        ):
            if entry_name is not name:
                self.include_parents(entry_name.decode("utf-8", "surrogateescape"))
            self.tw.header(
                entry_name,
                entry_type,
                mode=perm,
                uid=st.st_uid,
                gid=st.st_gid,
                size=entry_size,
                mtime=mtime,
                linkname=entry_link,
                devmajor=major,
                devminor=minor,
                records=records,
            )
            if entry_type == _REG and entry_size > 0 and dir_fd is not None and base is not None:
                self.copy_data(dir_fd, base, entry_size, rel)

    def copy_data(self, dir_fd: int, base: str, size: int, rel: str) -> None:
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            left = size
            while left > 0:
                chunk = os.read(fd, min(left, _CHUNK))
                if not chunk:
                    msg = f"failed to copy: {rel}: short write copying file"
                    raise OSError(errno.EIO, msg)
                self.tw.out.write(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        self.tw.pad(size)


def _entries(fd: int | None) -> dict[str, os.stat_result]:
    if fd is None:
        return {}
    with os.scandir(fd) as it:
        return {e.name: e.stat(follow_symlinks=False) for e in it}


def _dir_capability(fd: int) -> bytes:
    try:
        return os.getxattr(fd, _CAPABILITY)
    except OSError as exc:
        if exc.errno in {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP}:
            return b""
        raise


def _walk(writer: _DiffWriter, cur: TreeCursor) -> None:
    """The double walk: lower is tree 0 of ``cur``, upper tree 1."""
    # one frame per directory level: (its path, lower entries, upper entries, names left)
    frames: list[tuple[str, dict[str, os.stat_result], dict[str, os.stat_result], list[str]]] = []

    def enter(rel: str) -> None:
        lower, upper = _entries(cur.fd(0)), _entries(cur.fd(1))
        names = sorted(lower.keys() | upper.keys(), key=os.fsencode, reverse=True)
        frames.append((rel, lower, upper, names))

    enter("")
    while frames:
        rel, lower, upper, names = frames[-1]
        if not names:
            frames.pop()
            if frames:
                writer.chain.pop()
                cur.up()
            continue
        name = names.pop()
        child = f"{rel}/{name}" if rel else name
        sl, su = lower.get(name), upper.get(name)
        if su is None:
            writer.whiteout(child)
            continue
        ufd, lfd = cur.fd(1), cur.fd(0)
        if ufd is None:
            raise FileNotFoundError(errno.ENOENT, "the upper tree went away", child)
        if sl is None or lfd is None:
            kind = _ADD
        elif not _same_file(lfd, ufd, name, sl, su):
            kind = _MODIFY
        elif stat.S_ISDIR(su.st_mode) or su.st_nlink <= 1:
            kind = -1  # unchanged: nothing to write
        else:
            kind = _UNMODIFIED
        if kind >= 0:
            writer.write_entry(child, su, kind=kind, dir_fd=ufd, base=name)
        if stat.S_ISDIR(su.st_mode):
            cur.down(name)  # (a lower tree without that directory stays parked)
            here = cur.fd(1)
            if here is None:  # gone meanwhile
                cur.up()
                continue
            writer.chain.append((child, su, _dir_capability(here)))
            enter(child)


def write_diff(
    out: IO[bytes],
    lower: str | os.PathLike[str],
    upper: str | os.PathLike[str],
    *,
    source_date_epoch: int | None = None,
) -> None:
    """Write to ``out`` the tar that turns tree ``lower`` into tree ``upper``.

    ``source_date_epoch`` (seconds) caps modification times, for reproducible layers.
    """
    lfd = os.open(os.fspath(lower), DIR_FLAGS)
    try:
        ufd = os.open(os.fspath(upper), DIR_FLAGS)
        try:
            writer = _DiffWriter(out, ufd, source_date_epoch)
            with TreeCursor(lfd, ufd) as cur:
                _walk(writer, cur)
            writer.tw.close()
        finally:
            os.close(ufd)
    finally:
        os.close(lfd)
