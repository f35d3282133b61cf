"""WebSocket (RFC 6455) framing and handshake, sans-IO.

* the server's ``Sec-WebSocket-Accept`` is base64(SHA-1(key + the RFC's GUID));
* a frame is FIN/RSV/opcode, MASK bit and a 7-bit length (126: 16-bit length
  follows, 127: 64-bit), a 4-byte masking key when masked, then the payload;
  frames from a client MUST be masked, frames from a server MUST NOT;
* a message is one frame, or a text/binary frame without FIN followed by
  continuation frames; control frames (close, ping, pong) are at most 125
  bytes, never fragmented, and may arrive between fragments.

:class:`FrameParser` yields whole messages and control frames and raises
:class:`ProtocolError` (with the close code to send) on anything malformed.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

DEFAULT_MAX_MESSAGE = 32 * 1024 * 1024


class ProtocolError(Exception):
    """A malformed frame; ``code`` is the close code to answer with."""

    def __init__(self, message: str, code: int = CLOSE_PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(
        hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()
    ).decode()


def valid_key(key: str) -> bool:
    """Whether a ``Sec-WebSocket-Key`` is base64 of 16 bytes (RFC 6455 4.2.1)."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def _mask(data: bytes, key: bytes) -> bytes:
    if not data:
        return data
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big")


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask_key: bytes | None = None
) -> bytes:
    """One frame; pass ``mask_key`` (4 bytes) when acting as a client."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    mbit = 0x80 if mask_key is not None else 0
    n = len(payload)
    if n < 126:
        head.append(mbit | n)
    elif n < 1 << 16:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if mask_key is not None:
        return bytes(head) + mask_key + _mask(payload, mask_key)
    return bytes(head) + payload


def encode_close(  # noqa: D103 - a close frame with a status code
    code: int = CLOSE_NORMAL, reason: str = "", *, mask_key: bytes | None = None
) -> bytes:
    return encode_frame(
        OP_CLOSE, struct.pack(">H", code) + reason.encode()[:123], mask_key=mask_key
    )


@dataclass(frozen=True)
class Message:
    """A complete data message (``opcode`` is OP_TEXT or OP_BINARY) or a control frame."""

    opcode: int
    data: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.data) < 2:
            return None
        return int(struct.unpack_from(">H", self.data)[0])


@dataclass
class FrameParser:
    """Incremental frame parser.

    Args:
        require_mask: True on a server (client frames must be masked), False on a client.
        max_message: the largest message (sum of fragments) accepted.
    """

    require_mask: bool = True
    max_message: int = DEFAULT_MAX_MESSAGE
    _buf: bytearray = field(default_factory=bytearray)
    _frag_op: int | None = None
    _frag: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Message]:  # noqa: PLR0912, PLR0915
        self._buf += data
        out: list[Message] = []
        while True:
            if len(self._buf) < 2:
                return out
            b0, b1 = self._buf[0], self._buf[1]
            fin, rsv, opcode = bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F
            masked, n = bool(b1 & 0x80), b1 & 0x7F
            if rsv:
                msg = "reserved bits set without a negotiated extension"
                raise ProtocolError(msg)
            if masked != self.require_mask:
                msg = (
                    "client frames must be masked"
                    if self.require_mask
                    else "server frames must not be masked"
                )
                raise ProtocolError(msg)
            pos = 2
            if n == 126:
                if len(self._buf) < 4:
                    return out
                (n,) = struct.unpack_from(">H", self._buf, 2)
                pos = 4
            elif n == 127:
                if len(self._buf) < 10:
                    return out
                (n,) = struct.unpack_from(">Q", self._buf, 2)
                if n >> 63:
                    msg = "64-bit length with the top bit set"
                    raise ProtocolError(msg)
                pos = 10
            control = bool(opcode & 0x8)
            if control:
                if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                    msg = f"unknown control opcode {opcode:#x}"
                    raise ProtocolError(msg)
                if not fin or n > 125:
                    msg = "control frames must be unfragmented and at most 125 bytes"
                    raise ProtocolError(msg)
            elif opcode not in (OP_CONT, OP_TEXT, OP_BINARY):
                msg = f"unknown data opcode {opcode:#x}"
                raise ProtocolError(msg)
            if n + len(self._frag) > self.max_message:
                msg = f"message larger than {self.max_message} bytes"
                raise ProtocolError(msg, CLOSE_TOO_BIG)
            if masked:
                pos += 4
            if len(self._buf) < pos + n:
                return out
            payload = bytes(self._buf[pos : pos + n])
            if masked:
                payload = _mask(payload, bytes(self._buf[pos - 4 : pos]))
            del self._buf[: pos + n]
            if control:
                if opcode == OP_CLOSE and len(payload) == 1:
                    msg = "close frame with a 1-byte payload"
                    raise ProtocolError(msg)
                out.append(Message(opcode, payload))
                continue
            if opcode == OP_CONT:
                if self._frag_op is None:
                    msg = "continuation frame without a message to continue"
                    raise ProtocolError(msg)
                self._frag += payload
            else:
                if self._frag_op is not None:
                    msg = "new data frame inside a fragmented message"
                    raise ProtocolError(msg)
                self._frag_op = opcode
                self._frag = bytearray(payload)
            if fin:
                op, self._frag_op = self._frag_op, None
                body, self._frag = bytes(self._frag), bytearray()
                if op == OP_TEXT:
                    try:
                        body.decode("utf-8")
                    except UnicodeDecodeError as e:
                        msg = "text message is not UTF-8"
                        raise ProtocolError(msg, CLOSE_INVALID_DATA) from e
                out.append(Message(op, body))
