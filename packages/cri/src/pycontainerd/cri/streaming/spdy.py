"""SPDY/3.1 framing, sans-IO: what Kubernetes' SPDY executors speak after the upgrade.

Only the subset a streaming server needs, written from the SPDY/3.1 draft:

* every frame has an 8-byte header. A control frame starts with the control bit,
  the version (3) and a 16-bit type, then 8 bits of flags and a 24-bit length;
  a data frame starts with a 31-bit stream id, then flags and length;
* name/value header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are a 32-bit count,
  then 32-bit length-prefixed names and values (several values of one name
  joined by NUL), compressed by ONE zlib stream per direction, primed with the
  SPDY/3 dictionary and flushed (``Z_SYNC_FLUSH``) after every block;
* names are lower case on the wire.

The :class:`FrameParser` turns bytes into frame objects and raises
:class:`ProtocolError` for anything malformed (the connection must then be
closed). The ``encode_*`` functions build frames. Nothing here does I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02

# RST_STREAM status codes.
RST_PROTOCOL_ERROR = 1
RST_INVALID_STREAM = 2
RST_REFUSED_STREAM = 3
RST_CANCEL = 5
RST_INTERNAL_ERROR = 6
RST_STREAM_IN_USE = 8
RST_STREAM_ALREADY_CLOSED = 9

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

# SETTINGS ids.
SETTINGS_INITIAL_WINDOW_SIZE = 7

DEFAULT_WINDOW = 64 * 1024
MAX_WINDOW = 2**31 - 1
MAX_FRAME_LENGTH = 2**24 - 1
MAX_HEADER_BLOCK = 1024 * 1024
_MASK31 = 0x7FFFFFFF

# The SPDY/3 header compression dictionary: 65 length-prefixed words, then
# raw text (1423 bytes in all). Kept as its parts; see _dictionary().
_DICT_WORDS = (
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
)
_DICT_TAIL = (
    "10010120120220520630030230330430530630740240540640740840941041141241341441541641"
    "7502504505203 Non-Authoritative Information204 No Content301 Moved Permanently40"
    "0 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error"
    "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept O"
    "ct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,imag"
    "e/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/"
    "javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1"
    ",utf-,*,enq=0."
)


def _dictionary() -> bytes:
    out = bytearray()
    for word in _DICT_WORDS:
        out += struct.pack(">I", len(word)) + word.encode()
    out += "".join(_DICT_TAIL).encode()
    return bytes(out)


DICTIONARY = _dictionary()


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3.1: close the connection."""


Headers = dict[str, list[str]]


@dataclass(frozen=True)
class DataFrame:
    """DATA: stream bytes; ``fin`` ends the sender's half."""

    stream_id: int
    data: bytes
    fin: bool


@dataclass(frozen=True)
class SynStream:
    """SYN_STREAM: the peer opens a stream."""

    stream_id: int
    associated_id: int
    priority: int
    headers: Headers
    fin: bool
    unidirectional: bool


@dataclass(frozen=True)
class SynReply:
    """SYN_REPLY: the answer to our SYN_STREAM."""

    stream_id: int
    headers: Headers
    fin: bool


@dataclass(frozen=True)
class HeadersFrame:
    """HEADERS: more headers for a stream."""

    stream_id: int
    headers: Headers
    fin: bool


@dataclass(frozen=True)
class RstStream:
    """RST_STREAM: a stream ends abnormally."""

    stream_id: int
    status: int


@dataclass(frozen=True)
class Settings:
    """SETTINGS: id -> value."""

    values: dict[int, int]


@dataclass(frozen=True)
class Ping:
    """PING: odd ids from the client, even from the server; echoed."""

    ping_id: int


@dataclass(frozen=True)
class GoAway:
    """GOAWAY: no new streams; the session ends."""

    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class WindowUpdate:
    """WINDOW_UPDATE: the peer can take ``delta`` more bytes on the stream."""

    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownControl:
    """A control frame of a type SPDY/3.1 does not define: ignored (spec)."""

    type: int


Frame = (
    DataFrame
    | SynStream
    | SynReply
    | HeadersFrame
    | RstStream
    | Settings
    | Ping
    | GoAway
    | WindowUpdate
    | UnknownControl
)


class HeaderCompressor:
    """One direction's header-block compressor (state spans all frames)."""

    def __init__(self) -> None:
        self._z = zlib.compressobj(
            zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, DICTIONARY
        )

    def compress(self, headers: Headers) -> bytes:
        raw = bytearray(struct.pack(">I", len(headers)))
        for name, values in headers.items():
            n = name.lower().encode()
            v = "\0".join(values).encode()
            raw += struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v
        return self._z.compress(bytes(raw)) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """One direction's header-block decompressor."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, zdict=DICTIONARY)

    def decompress(self, block: bytes) -> Headers:
        try:
            raw = self._z.decompress(block, MAX_HEADER_BLOCK + 1)
        except zlib.error as e:
            msg = f"bad header block compression: {e}"
            raise ProtocolError(msg) from e
        if len(raw) > MAX_HEADER_BLOCK or self._z.unconsumed_tail:
            msg = "header block too large"
            raise ProtocolError(msg)
        return parse_header_block(raw)


def parse_header_block(raw: bytes) -> Headers:
    """Decode an uncompressed name/value block."""
    try:
        (count,) = struct.unpack_from(">I", raw, 0)
        pos = 4
        headers: Headers = {}
        for _ in range(count):
            (nlen,) = struct.unpack_from(">I", raw, pos)
            pos += 4
            name = raw[pos : pos + nlen]
            if len(name) != nlen or nlen == 0:
                msg = "truncated or empty header name"
                raise ProtocolError(msg)
            pos += nlen
            (vlen,) = struct.unpack_from(">I", raw, pos)
            pos += 4
            value = raw[pos : pos + vlen]
            if len(value) != vlen:
                msg = "truncated header value"
                raise ProtocolError(msg)
            pos += vlen
            key = name.decode("utf-8", "replace")
            if key != key.lower():
                msg = f"header name {key!r} is not lower case"
                raise ProtocolError(msg)
            if key in headers:
                msg = f"duplicate header {key!r}"
                raise ProtocolError(msg)
            headers[key] = value.decode("utf-8", "replace").split("\0")
    except struct.error as e:
        msg = "truncated header block"
        raise ProtocolError(msg) from e
    if pos != len(raw):
        msg = "trailing bytes after the header block"
        raise ProtocolError(msg)
    return headers


def _control(ftype: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, ftype, (flags << 24) | len(payload)) + payload


def encode_data(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
    """A DATA frame."""
    flags = FLAG_FIN if fin else 0
    return struct.pack(">II", stream_id & _MASK31, (flags << 24) | len(data)) + data


def encode_syn_stream(
    comp: HeaderCompressor,
    stream_id: int,
    headers: Headers,
    *,
    associated_id: int = 0,
    priority: int = 0,
    fin: bool = False,
) -> bytes:
    """A SYN_STREAM frame (a client opening a stream)."""
    flags = FLAG_FIN if fin else 0
    head = struct.pack(
        ">IIBB", stream_id & _MASK31, associated_id & _MASK31, (priority & 7) << 5, 0
    )
    return _control(SYN_STREAM, flags, head + comp.compress(headers))


def encode_syn_reply(
    comp: HeaderCompressor, stream_id: int, headers: Headers, *, fin: bool = False
) -> bytes:
    """A SYN_REPLY frame."""
    flags = FLAG_FIN if fin else 0
    return _control(
        SYN_REPLY, flags, struct.pack(">I", stream_id & _MASK31) + comp.compress(headers)
    )


def encode_rst_stream(stream_id: int, status: int) -> bytes:
    """A RST_STREAM frame."""
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id & _MASK31, status))


def encode_settings(values: dict[int, int]) -> bytes:
    """A SETTINGS frame."""
    body = struct.pack(">I", len(values))
    for sid, value in values.items():
        body += struct.pack(">II", sid & 0xFFFFFF, value)
    return _control(SETTINGS, 0, body)


def encode_ping(ping_id: int) -> bytes:
    """A PING frame."""
    return _control(PING, 0, struct.pack(">I", ping_id))


def encode_goaway(last_good_stream_id: int, status: int = GOAWAY_OK) -> bytes:
    """A GOAWAY frame."""
    return _control(GOAWAY, 0, struct.pack(">II", last_good_stream_id & _MASK31, status))


def encode_window_update(stream_id: int, delta: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return _control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id & _MASK31, delta & _MASK31))


@dataclass
class FrameParser:
    """Incremental SPDY/3.1 frame parser: ``feed()`` bytes, get frames.

    Args:
        max_data_length: the largest DATA payload accepted (a frame-size limit
            independent of flow control).
    """

    max_data_length: int = MAX_FRAME_LENGTH
    _buf: bytearray = field(default_factory=bytearray)
    _dec: HeaderDecompressor = field(default_factory=HeaderDecompressor)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 8:
            first, second = struct.unpack_from(">II", self._buf, 0)
            length = second & 0xFFFFFF
            flags = second >> 24
            if not first & 0x80000000 and length > self.max_data_length:
                msg = f"data frame of {length} bytes exceeds {self.max_data_length}"
                raise ProtocolError(msg)
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8 : 8 + length])
            del self._buf[: 8 + length]
            if first & 0x80000000:
                frames.append(self._control(first, flags, payload))
            else:
                frames.append(DataFrame(first & _MASK31, payload, bool(flags & FLAG_FIN)))
        return frames

    def _control(self, first: int, flags: int, payload: bytes) -> Frame:  # noqa: PLR0911
        version = (first >> 16) & 0x7FFF
        ftype = first & 0xFFFF
        if version != VERSION:
            msg = f"unsupported SPDY version {version}"
            raise ProtocolError(msg)
        fin = bool(flags & FLAG_FIN)

        def need(n: int, *, exact: bool = True) -> None:
            if (len(payload) != n) if exact else (len(payload) < n):
                msg = f"control frame type {ftype} has a bad length {len(payload)}"
                raise ProtocolError(msg)

        if ftype == SYN_STREAM:
            need(10, exact=False)
            sid, assoc, prio = struct.unpack_from(">IIB", payload, 0)
            if sid & _MASK31 == 0:
                msg = "SYN_STREAM with stream id 0"
                raise ProtocolError(msg)
            return SynStream(
                sid & _MASK31,
                assoc & _MASK31,
                prio >> 5,
                self._dec.decompress(payload[10:]),
                fin,
                bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if ftype == SYN_REPLY:
            need(4, exact=False)
            (sid,) = struct.unpack_from(">I", payload, 0)
            return SynReply(sid & _MASK31, self._dec.decompress(payload[4:]), fin)
        if ftype == HEADERS:
            need(4, exact=False)
            (sid,) = struct.unpack_from(">I", payload, 0)
            return HeadersFrame(sid & _MASK31, self._dec.decompress(payload[4:]), fin)
        if ftype == RST_STREAM:
            need(8)
            sid, status = struct.unpack(">II", payload)
            return RstStream(sid & _MASK31, status)
        if ftype == SETTINGS:
            need(4, exact=False)
            (count,) = struct.unpack_from(">I", payload, 0)
            need(4 + 8 * count)
            values = {}
            for i in range(count):
                idf, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                values[idf & 0xFFFFFF] = value
            return Settings(values)
        if ftype == PING:
            need(4)
            return Ping(struct.unpack(">I", payload)[0])
        if ftype == GOAWAY:
            need(8)
            last, status = struct.unpack(">II", payload)
            return GoAway(last & _MASK31, status)
        if ftype == WINDOW_UPDATE:
            need(8)
            sid, delta = struct.unpack(">II", payload)
            if delta & _MASK31 == 0:
                msg = "WINDOW_UPDATE with a zero delta"
                raise ProtocolError(msg)
            return WindowUpdate(sid & _MASK31, delta & _MASK31)
        return UnknownControl(ftype)
