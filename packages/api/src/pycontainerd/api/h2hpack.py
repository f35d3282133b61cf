"""HPACK (RFC 7541) for :mod:`pycontainerd.api.h2grpc`: the request decoder and literal encoding.

The decoder keeps the client's dynamic table and caps what one header block
may decode to (the header list size the server advertises), so a block of
one-byte references to a large table entry (an HPACK bomb) costs an error,
not memory. Responses are encoded as literals without indexing: the server
keeps no encoder table, so clients never have to track one.

Sans-IO and free of asyncio and grpc; ``tests/test_h2hpack.py`` checks the
decoder against the ``hpack`` package's with hypothesis.
"""

from __future__ import annotations

import collections
from typing import Final

from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

__all__ = ["HeaderListTooLargeError", "HpackDecoder", "HpackError", "encode_int", "literal"]

MAX_HEADER_LIST: Final = 16 << 20
"""The default cap on a decoded header list (grpc-go's), RFC 7541 sizes."""

TABLE_SIZE: Final = 4096
"""SETTINGS_HEADER_TABLE_SIZE: the default, which this server never changes."""


class HpackError(Exception):
    """A header block this server cannot decode (a connection error: COMPRESSION_ERROR)."""


class HeaderListTooLargeError(HpackError):
    """A header block that decodes to more than the advertised header list size (a bomb)."""


_STATIC: Final = tuple((n.decode(), v.decode()) for n, v in HeaderTable.STATIC_TABLE)
_STATIC_SIZED: Final = tuple((n, v, 32 + len(n) + len(v)) for n, v in _STATIC)


class HpackDecoder:
    """HPACK (RFC 7541) decoding with the dynamic table, tuned for gRPC's repeats.

    A client sends nearly the same header block on every call of a method; once
    its fields are in the dynamic table the block is a few index bytes. A block
    that does not change the table decodes to the same headers for as long as
    the table stays the same, so such results are kept per (table generation,
    block) and the common call decodes with one dictionary lookup.
    """

    __slots__ = ("_cache", "_generation", "_max_list", "_max_size", "_size", "_table")

    CACHED_BLOCK: Final = 2048
    """Blocks up to this size are remembered (a call's usual block is far smaller)."""

    def __init__(self, max_size: int = TABLE_SIZE, max_list: int = MAX_HEADER_LIST) -> None:
        self._table: collections.deque[tuple[str, str, int]] = collections.deque()
        self._size = 0
        self._max_size = max_size
        self._max_list = max_list
        self._generation = 0
        self._cache: dict[tuple[int, bytes], list[tuple[str, str]]] = {}

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """The (name, value) fields of ``block``, in order.

        Raises:
            HpackError: a malformed block or an index outside the tables.
        """
        key = (self._generation, block)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        generation = self._generation
        try:
            headers = self._decode(block)
        except IndexError as exc:
            msg = f"malformed header block: {exc}"
            raise HpackError(msg) from exc
        if self._generation == generation and len(block) <= self.CACHED_BLOCK:
            if len(self._cache) >= 512:
                self._cache.clear()
            self._cache[key] = headers
        return headers

    def _field(self, index: int) -> tuple[str, str, int]:
        if index <= 0:
            msg = "header index 0"
            raise HpackError(msg)
        if index <= len(_STATIC):
            return _STATIC_SIZED[index - 1]
        dyn = index - len(_STATIC) - 1
        if dyn >= len(self._table):
            msg = f"header index {index} outside the tables"
            raise HpackError(msg)
        return self._table[dyn]

    def _add(self, name: str, value: str, size: int) -> None:
        self._generation += 1
        self._table.appendleft((name, value, size))
        self._size += size
        self._evict()

    def _evict(self) -> None:
        while self._size > self._max_size and self._table:
            self._size -= self._table.pop()[2]

    @staticmethod
    def _int(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
        limit = (1 << prefix_bits) - 1
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            b = data[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos
            if shift > 28:
                msg = "header integer too large"
                raise HpackError(msg)

    def _string(self, data: bytes, pos: int) -> tuple[str, int, int]:
        """A string literal: (text, its size in octets, position after it).

        Bytes that are not UTF-8 are kept as surrogates (the call's checks refuse them).
        """
        huffman = data[pos] & 0x80
        length, pos = self._int(data, pos, 7)
        end = pos + length
        if end > len(data):
            msg = "header string runs past the block"
            raise HpackError(msg)
        raw = data[pos:end]
        if huffman:
            try:
                raw = decode_huffman(raw)
            except Exception as exc:
                msg = f"bad Huffman string: {exc}"
                raise HpackError(msg) from exc
        return raw.decode("utf-8", "surrogateescape"), len(raw), end

    def _literal(self, data: bytes, pos: int, prefix_bits: int) -> tuple[str, str, int, int]:
        """A literal field: (name, value, RFC 7541 size, position after it)."""
        index, pos = self._int(data, pos, prefix_bits)
        if index:
            name, _, size = self._field(index)
            size = 32 + len(name.encode("utf-8", "surrogateescape"))
        else:
            name, size, pos = self._string(data, pos)
            size += 32
        value, vsize, pos = self._string(data, pos)
        return name, value, size + vsize, pos

    def _decode(self, data: bytes) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        pos = 0
        end = len(data)
        total = 0
        limit = self._max_list
        while pos < end:
            b = data[pos]
            if b & 0x80:  # indexed field
                index, pos = self._int(data, pos, 7)
                name, value, size = self._field(index)
                out.append((name, value))
            elif b & 0x40:  # literal with incremental indexing
                name, value, size, pos = self._literal(data, pos, 6)
                out.append((name, value))
                self._add(name, value, size)
            elif b & 0x20:  # dynamic table size update: only ahead of the fields (§4.2)
                if out:
                    msg = "table size update after a header field"
                    raise HpackError(msg)
                size, pos = self._int(data, pos, 5)
                if size > TABLE_SIZE:
                    msg = f"table size {size} above the advertised {TABLE_SIZE}"
                    raise HpackError(msg)
                self._generation += 1
                self._max_size = size
                self._evict()
                continue
            else:  # literal without indexing / never indexed
                name, value, size, pos = self._literal(data, pos, 4)
                out.append((name, value))
            total += size
            if total > limit:
                msg = f"header list larger than the advertised {limit} bytes"
                raise HeaderListTooLargeError(msg)
        return out


def encode_int(value: int, prefix_bits: int, first: int) -> bytes:
    """``value`` as an HPACK integer with a ``prefix_bits`` prefix, OR-ed into ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """A literal header field without indexing, new name, no Huffman coding."""
    return b"\x00" + encode_int(len(name), 7, 0) + name + encode_int(len(value), 7, 0) + value
