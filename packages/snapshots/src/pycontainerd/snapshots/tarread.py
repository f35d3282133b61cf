"""A lean, strict, streaming reader of layer tar streams (what Go's ``archive/tar`` reads).

:class:`TarReader` turns an iterator of byte chunks (of any size) into
:class:`Entry` objects, one at a time, file data staying in the stream until
the caller writes or skips it. It reads what containerd's applier reads, as
Go's ``archive/tar`` does:

* ustar, GNU (long names and links) and PAX headers (``path``, ``linkpath``,
  ``size``, ``uid``, ``gid``, ``mtime``, ``atime``, ``SCHILY.xattr.*``);
* consecutive extended headers *replace* each other (only the last one before
  an entry applies), so memory stays bounded by one header (1 MiB) whatever
  the layer holds; a global PAX header is not applied to entries;
* GNU sparse files (old GNU ``S`` entries and the PAX 0.0, 0.1 and 1.0
  formats) are read as their data fragments and expanded by the writer;
* the archive may end with two zero blocks, one, or none at all (a layer
  that stops right after the last entry's data, without padding, as umoci
  writes them); a truncated header, truncated file data, a bad checksum, or a
  zero block followed by a non-zero one raise :class:`InvalidArgumentError`.

All methods are blocking. Importing this module must not import grpc.
"""

from __future__ import annotations

import os
import re
import zlib
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["XATTR_PREFIX", "Entry", "TarReader", "invalid"]

XATTR_PREFIX: Final = "SCHILY.xattr."
BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(BLOCK)
#: largest PAX or GNU long-name record accepted (as Go's archive/tar)
_MAX_SPECIAL: Final = 1 << 20
_INT64_MAX: Final = (1 << 63) - 1

REG: Final = frozenset(b"07")  # regular (and contiguous) files; b"\0" is handled apart
LNK: Final = ord("1")
SYM: Final = ord("2")
CHR: Final = ord("3")
BLK: Final = ord("4")
DIR: Final = ord("5")
FIFO: Final = ord("6")
_OLD_REG: Final = 0
_PAX: Final = ord("x")
_PAX_GLOBAL: Final = ord("g")
_GNU_LONGNAME: Final = ord("L")
_GNU_LONGLINK: Final = ord("K")
_GNU_SPARSE: Final = ord("S")
_USTAR_MAGIC: Final = b"ustar\x0000"
_EXTENDED: Final = frozenset({_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK})
KNOWN: Final = frozenset({*REG, LNK, SYM, CHR, BLK, DIR, FIFO})
#: kinds :meth:`TarReader._plain` reads when no extended header precedes them
_PLAIN: Final = frozenset({*REG, LNK, SYM, DIR})
_DECIMAL: Final = re.compile(rb"[+-]?[0-9]+")


def invalid(why: str) -> InvalidArgumentError:
    """The error of a malformed layer stream."""
    return InvalidArgumentError(f"invalid layer archive: {why}")


def _text(field: bytes) -> str:
    return field.partition(b"\0")[0].decode("utf-8", "surrogateescape")


#: Numeric fields already parsed (modes, owners and times repeat from entry to entry).
_NUMBERS: dict[bytes, int] = {}
_NUMBERS_MAX: Final = 4096


def _number(field: bytes) -> int:
    """A numeric header field: NUL/space padded octal, or base-256 (high bit set)."""
    value = _NUMBERS.get(field)
    if value is None:
        value = _parse_number(field)
        if len(_NUMBERS) < _NUMBERS_MAX:
            _NUMBERS[field] = value
    return value


def _parse_number(field: bytes) -> int:
    first = field[0]
    if first & 0x80:
        if first == 0x80:
            value = int.from_bytes(field[1:], "big")
        elif first == 0xFF:
            value = int.from_bytes(field, "big", signed=True)
        else:
            raise invalid(f"bad base-256 number {field!r}")
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise invalid(f"base-256 number {field!r} out of range")
        return value
    digits = field.partition(b"\0")[0].strip(b" ")
    if not digits:
        return 0
    try:
        return int(digits, 8)
    except ValueError:
        raise invalid(f"bad octal number {field!r}") from None


def _checksum_ok(block: bytes) -> bool:
    """Whether the stored checksum matches the header's byte sum (unsigned or signed)."""
    field = block[148:156]
    stored = _parse_number(field)  # differs from header to header: not worth remembering
    # Adler-32's low half is 1 + the byte sum modulo 65521: exact for 256 bytes (at most
    # 65 280), and far cheaper than summing 512 Python ints
    total = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2
    unsigned = total - sum(field) + 8 * 0x20
    if stored == unsigned:
        return True
    high = sum(1 for b in block if b & 0x80) - sum(1 for b in field if b & 0x80)
    return stored == unsigned - 256 * high


def _pax_int(value: bytes) -> int:
    """A decimal PAX number, in the range of Go's int64 (``strconv.ParseInt``)."""
    if not _DECIMAL.fullmatch(value):
        raise invalid(f"bad PAX number {value!r}")
    n = int(value)
    if not -_INT64_MAX - 1 <= n <= _INT64_MAX:
        raise invalid(f"PAX number {value!r} out of range")
    return n


def _pax_time(value: bytes) -> int:
    """A PAX time (decimal seconds, maybe fractional or negative) in nanoseconds."""
    whole, _, frac = value.partition(b".")
    seconds = _pax_int(whole)
    if frac and not frac.isdigit():
        raise invalid(f"bad PAX time {value!r}")
    ns = int((frac + b"000000000")[:9]) if frac else 0
    if whole.startswith(b"-"):
        ns = -ns
    return seconds * 1_000_000_000 + ns


def _pax_records(data: bytes) -> list[tuple[str, bytes]]:
    """The ``<len> <key>=<value>`` records (newline-terminated) of a PAX extended header."""
    out: list[tuple[str, bytes]] = []
    pos, end = 0, len(data)
    while pos < end and data[pos]:
        space = data.find(b" ", pos, pos + 20)
        length = int(data[pos:space]) if space > pos and data[pos:space].isdigit() else 0
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > end or not record.endswith(b"\n") or b"=" not in record:
            raise invalid("malformed PAX record")
        key, _, value = record[:-1].partition(b"=")
        out.append((key.decode("utf-8", "surrogateescape"), value))
        pos += length
    return out


class Entry:
    """One tar member, as much of it as applying a layer needs.

    ``size`` is the file's (expanded) size; ``sparse``, for a sparse file,
    lists its ``(offset, length)`` data fragments, stored one after the other.
    """

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
        "sparse",
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
        self.sparse: list[tuple[int, int]] | None = None

    def isdir(self) -> bool:
        return self.type == DIR

    def isreg(self) -> bool:
        return self.type in REG


def _check_sparse(fragments: list[tuple[int, int]], size: int) -> None:
    """Fragments in order, without overlap, inside the file (as Go validates them)."""
    end = 0
    for offset, length in fragments:
        if offset < 0 or length < 0 or offset < end or offset + length > size:
            raise invalid("bad sparse map")
        end = offset + length


class TarReader:
    """Entries of an uncompressed tar stream given as an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self._data = 0  # data of the current entry not yet consumed
        self._pad = 0  # its padding
        self._eof = False
        self._data_consumed = 0  # bytes of a PAX 1.0 sparse map already read from the data

    # --- the byte stream ----------------------------------------------------------------

    def _more(self) -> bool:
        for chunk in self._chunks:
            if chunk:
                self._buf, self._pos = chunk, 0
                return True
        self._buf, self._pos = b"", 0
        return False

    def _take(self, n: int) -> bytes:
        """Up to ``n`` bytes: fewer only where the stream ends."""
        pos = self._pos
        if pos + n <= len(self._buf):
            self._pos = pos + n
            return self._buf[pos : pos + n]
        parts = [self._buf[pos:]]
        have = len(parts[0])
        self._pos = len(self._buf)
        while have < n and self._more():
            piece = self._buf[: n - have]
            self._pos = len(piece)
            parts.append(piece)
            have += len(piece)
        return b"".join(parts)

    def _skip(self, n: int) -> int:
        """Skip up to ``n`` bytes; return how many were missing at the end of the stream."""
        while n > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._more():
                    return n
                continue
            step = min(avail, n)
            self._pos += step
            n -= step
        return 0

    def _finish_entry(self) -> None:
        """Skip the rest of the current entry; a stream ending in its padding just ends."""
        data, self._data = self._data, 0
        if data and self._skip(data):
            raise invalid("unexpected end of data")
        pad, self._pad = self._pad, 0
        if pad and self._skip(pad):
            self._eof = True

    def _special(self, size: int) -> bytes:
        if size > _MAX_SPECIAL:
            raise invalid(f"extended header of {size} bytes is too large")
        data = self._take(size) if size else b""
        if len(data) != size:
            raise invalid("unexpected end of data")
        if self._skip(-size % BLOCK):
            self._eof = True
        return data

    # --- file data ----------------------------------------------------------------------

    def skip_data(self) -> None:
        """Skip what is left of the current entry's data."""
        self._finish_entry()

    def _copy(self, fd: int, left: int, name: str) -> None:
        while left > 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._more():
                    raise invalid(f"unexpected end of data in {name!r}")
                continue
            step = min(avail, left)
            view = memoryview(self._buf)[self._pos : self._pos + step]
            while view:
                view = view[os.write(fd, view) :]
            self._pos += step
            left -= step
            self._data -= step

    def write_data(self, entry: Entry, fd: int) -> None:
        """Write the current entry's data to ``fd`` (a sparse file with its holes)."""
        if entry.sparse is None:
            self._copy(fd, self._data, entry.name)
            return
        for offset, length in entry.sparse:
            if length:
                os.lseek(fd, offset, os.SEEK_SET)
                self._copy(fd, length, entry.name)
        os.ftruncate(fd, entry.size)

    # --- headers ------------------------------------------------------------------------

    def _block(self) -> bytes | None:
        """The next header block, or ``None`` at the end of the archive."""
        if self._eof:
            return None
        block = self._take(BLOCK)
        if not block:
            return None
        if len(block) != BLOCK:
            raise invalid("unexpected end of data in a header")
        if block == _ZERO_BLOCK:
            second = self._take(BLOCK)
            if second and second != _ZERO_BLOCK:
                raise invalid("a zero block followed by a header")
            self._eof = True
            return None
        if not _checksum_ok(block):
            raise invalid("bad header checksum")
        return block

    def __iter__(self) -> Iterator[Entry]:
        return self

    def __next__(self) -> Entry:  # noqa: PLR0912, PLR0915
        self._finish_entry()
        pax: list[tuple[str, bytes]] = []
        long_name: str | None = None
        long_link: str | None = None
        while True:
            block = self._block()
            if block is None:
                raise StopIteration
            kind = block[156]
            if kind not in _EXTENDED:
                break
            size = _number(block[124:136])
            if size < 0:
                raise invalid("negative size")
            data = self._special(size)
            if kind == _PAX:
                pax = _pax_records(data)  # replaces an earlier one, as Go does
            elif kind == _PAX_GLOBAL:
                pax = []  # Go hands it out as an entry of its own: nothing carries over
            elif kind == _GNU_LONGNAME:
                long_name = _text(data)
            else:
                long_link = _text(data)
        if not pax and long_name is None and long_link is None and kind in _PLAIN:
            return self._plain(block, kind)
        records = dict(pax)
        name = long_name if long_name is not None else _text(block[0:100])
        if long_name is None and block[257:265] == _USTAR_MAGIC and block[345]:
            name = _text(block[345:500]) + "/" + name
        if "path" in records:
            name = records["path"].decode("utf-8", "surrogateescape")
        if kind == _OLD_REG:
            kind = DIR if name.endswith("/") else ord("0")
        size = _pax_int(records["size"]) if "size" in records else _number(block[124:136])
        if size < 0:
            raise invalid("negative size")
        sparse: list[tuple[int, int]] | None = None
        real_size = size
        if kind == _GNU_SPARSE:
            sparse, real_size = self._old_gnu_sparse(block)
            kind = ord("0")
        elif "GNU.sparse.major" in records or "GNU.sparse.offset" in records:
            sparse, real_size, name = self._pax_sparse(pax, records, name, size)
        if sparse is not None and sum(n for _, n in sparse) != size - self._data_consumed:
            raise invalid(f"sparse map of {name!r} does not match its data")
        entry = Entry(name, kind, real_size)
        entry.sparse = sparse
        entry.mode = _number(block[100:108])
        entry.uid = _pax_int(records["uid"]) if "uid" in records else _number(block[108:116])
        entry.gid = _pax_int(records["gid"]) if "gid" in records else _number(block[116:124])
        if "mtime" in records:
            entry.mtime_ns = _pax_time(records["mtime"])
        else:
            entry.mtime_ns = _number(block[136:148]) * 1_000_000_000
        entry.atime_ns = entry.mtime_ns  # the later of the two, as containerd
        if "atime" in records:
            entry.atime_ns = max(entry.mtime_ns, _pax_time(records["atime"]))
        if long_link is not None:
            entry.linkname = long_link
        elif "linkpath" in records:
            entry.linkname = records["linkpath"].decode("utf-8", "surrogateescape")
        else:
            entry.linkname = _text(block[157:257])
        if kind in {CHR, BLK}:
            entry.devmajor = _number(block[329:337])
            entry.devminor = _number(block[337:345])
        for key, value in pax:
            if key.startswith(XATTR_PREFIX):
                entry.xattrs[key.removeprefix(XATTR_PREFIX)] = value
        if kind in REG or kind not in KNOWN:
            self._data = size - (self._data_consumed if sparse is not None else 0)
            self._pad = -size % BLOCK
        else:  # links, directories, devices and FIFOs carry no data, whatever the size says
            entry.size = 0
            self._data = 0
            self._pad = 0
        self._data_consumed = 0
        return entry

    def _plain(self, block: bytes, kind: int) -> Entry:
        """An entry described by its header block alone (no extended header): the common case.

        The same fields as the general path in :meth:`__next__`, without its lookups.
        """
        name = _text(block[0:100])
        if block[257:265] == _USTAR_MAGIC and block[345]:
            name = _text(block[345:500]) + "/" + name
        size = _number(block[124:136])
        if size < 0:
            raise invalid("negative size")
        entry = Entry(name, kind, size)
        entry.mode = _number(block[100:108])
        entry.uid = _number(block[108:116])
        entry.gid = _number(block[116:124])
        entry.mtime_ns = entry.atime_ns = _number(block[136:148]) * 1_000_000_000
        entry.linkname = _text(block[157:257])
        if kind in REG:
            self._data = size
            self._pad = -size % BLOCK
        else:  # links and directories carry no data, whatever the size says
            entry.size = 0
            self._data = 0
            self._pad = 0
        self._data_consumed = 0
        return entry

    def _old_gnu_sparse(self, block: bytes) -> tuple[list[tuple[int, int]], int]:
        fragments: list[tuple[int, int]] = []

        def read(area: bytes, count: int) -> None:
            for i in range(count):
                item = area[i * 24 : i * 24 + 24]
                if not item[0]:
                    return
                fragments.append((_number(item[:12]), _number(item[12:24])))

        read(block[386:482], 4)
        extended = block[482]
        while extended:
            more = self._take(BLOCK)
            if len(more) != BLOCK:
                raise invalid("unexpected end of data in a sparse header")
            read(more[:504], 21)
            extended = more[504]
        real_size = _number(block[483:495])
        _check_sparse(fragments, real_size)
        return fragments, real_size

    def _pax_sparse(
        self, pax: list[tuple[str, bytes]], records: dict[str, bytes], name: str, size: int
    ) -> tuple[list[tuple[int, int]], int, str]:
        major = records.get("GNU.sparse.major", b"0")
        minor = records.get("GNU.sparse.minor", b"0")
        if "GNU.sparse.name" in records:
            name = records["GNU.sparse.name"].decode("utf-8", "surrogateescape")
        real = records.get("GNU.sparse.realsize", records.get("GNU.sparse.size"))
        if real is None:
            raise invalid("sparse file without a real size")
        real_size = _pax_int(real)
        numbers: list[int]
        if major == b"1" and minor == b"0":
            numbers = self._sparse_map_in_data(size)
        elif major == b"0" and minor == b"1":
            text = records.get("GNU.sparse.map", b"")
            numbers = [_pax_int(n) for n in text.split(b",")] if text else []
        elif major == b"0" and minor == b"0":
            numbers = [
                _pax_int(v) for k, v in pax if k in {"GNU.sparse.offset", "GNU.sparse.numbytes"}
            ]
        else:
            raise invalid(f"unknown sparse format {major!r}.{minor!r}")
        if len(numbers) % 2:
            raise invalid("bad sparse map")
        fragments = list(zip(numbers[0::2], numbers[1::2], strict=True))
        _check_sparse(fragments, real_size)
        return fragments, real_size, name

    def _sparse_map_in_data(self, size: int) -> list[int]:
        """The PAX 1.0 map: decimal lines at the start of the data, padded to a block."""
        lines: list[int] = []
        buf = b""
        used = 0
        count: int | None = None
        while count is None or len(lines) < 2 * count:
            while b"\n" not in buf:
                chunk = self._take(BLOCK)
                used += len(chunk)
                if len(chunk) != BLOCK or used > size or used > _MAX_SPECIAL:
                    raise invalid("bad sparse map")
                buf += chunk
            line, _, buf = buf.partition(b"\n")
            value = _pax_int(line)
            if count is None:
                count = value
                if count < 0:
                    raise invalid("bad sparse map")
            else:
                lines.append(value)
        self._data_consumed = used
        return lines
