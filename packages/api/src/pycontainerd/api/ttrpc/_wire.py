"""ttrpc framing: the 10-byte header, message types, limits, and a frame reader.

A frame is a big-endian header ``uint32 length, uint32 stream id, uint8 type,
uint8 flags`` followed by ``length`` bytes of payload (a marshalled
``ttrpc.Request`` or ``ttrpc.Response``). Payloads above 4 MiB are refused by
the sender and discarded by the receiver, which answers ResourceExhausted.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Final, TypeVar

from google.protobuf import message
from google.protobuf.message import DecodeError

from pycontainerd.core.errdefs import InternalError, ResourceExhaustedError, UnavailableError

M = TypeVar("M", bound=message.Message)

HEADER = struct.Struct(">IIBB")
HEADER_LENGTH: Final = 10
MESSAGE_LENGTH_MAX: Final = 4 << 20
"""Largest payload of one frame (4 MiB), as containerd's ttrpc enforces."""

TYPE_REQUEST: Final = 0x1
TYPE_RESPONSE: Final = 0x2
TYPE_DATA: Final = 0x3

FLAG_REMOTE_CLOSED: Final = 0x1
FLAG_REMOTE_OPEN: Final = 0x2
FLAG_NO_DATA: Final = 0x4

NAMESPACE_KEY: Final = "containerd-namespace-ttrpc"
"""Metadata key carrying the containerd namespace of a ttrpc call."""


class ClosedError(UnavailableError):
    """The connection is closed (containerd's ``ttrpc: closed``)."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(message)


def oversize_error(length: int) -> ResourceExhaustedError:
    """The error for a payload of ``length`` bytes, worded as Go's ttrpc words it."""
    return ResourceExhaustedError(
        f"message length {length} exceed maximum message size of {MESSAGE_LENGTH_MAX}"
    )


def frame(stream_id: int, mtype: int, payload: bytes, flags: int = 0) -> bytes:
    """One frame ready for ``transport.write``.

    Raises:
        ResourceExhaustedError: ``payload`` is larger than 4 MiB.
    """
    if len(payload) > MESSAGE_LENGTH_MAX:
        raise oversize_error(len(payload))
    return HEADER.pack(len(payload), stream_id, mtype, flags) + payload


class FramedProtocol(asyncio.Protocol):
    """Splits the byte stream into frames; subclasses handle them.

    Subclasses implement :meth:`frame_received` and :meth:`oversize_received`.
    An oversized payload is skipped as it arrives and never buffered.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discard = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - stream sockets only
        self.transport = transport

    def frame_received(self, stream_id: int, mtype: int, flags: int, payload: bytes) -> None:
        """Handle one complete frame."""
        raise NotImplementedError

    def oversize_received(self, stream_id: int, mtype: int, length: int) -> None:
        """Handle the header of a frame whose payload is being discarded."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self._discard:
            skip = min(self._discard, len(data))
            self._discard -= skip
            if skip == len(data):
                return
            data = data[skip:]
        buf = self._buf
        view: bytes | bytearray
        if buf:
            buf += data
            view = buf
        else:
            view = data
        pos = 0
        end = len(view)
        unpack = HEADER.unpack_from
        while end - pos >= HEADER_LENGTH:
            length, stream_id, mtype, flags = unpack(view, pos)
            if length > MESSAGE_LENGTH_MAX:
                self.oversize_received(stream_id, mtype, length)
                available = end - pos - HEADER_LENGTH
                if available >= length:
                    pos += HEADER_LENGTH + length
                    continue
                self._discard = length - available
                pos = end
                break
            stop = pos + HEADER_LENGTH + length
            if stop > end:
                break
            self.frame_received(stream_id, mtype, flags, bytes(view[pos + HEADER_LENGTH : stop]))
            pos = stop
        if view is buf:
            del buf[:pos]
        elif pos < end:
            buf += data[pos:]


def decode(msg: M, payload: bytes, what: str) -> M:
    """``msg`` filled from ``payload``.

    Raises:
        InternalError: ``<what>: <the parser's reason>`` when it does not parse.
    """
    try:
        msg.ParseFromString(payload)
    except DecodeError as exc:
        text = f"{what}: {exc}"
        raise InternalError(text) from exc
    return msg
