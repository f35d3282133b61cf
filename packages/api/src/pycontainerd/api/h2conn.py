"""The HTTP/2 connection of :mod:`pycontainerd.api.h2grpc`, sans I/O.

:class:`H2Connection` takes the bytes a client sends (:meth:`H2Connection.receive_data`)
and keeps what HTTP/2 asks of a server: the preface, frame parsing, SETTINGS, the
flow-control windows in both directions, stream states and the RFC 9113 rules,
the limits and the flood budget. What it answers (SETTINGS and PING acks,
WINDOW_UPDATE, RST_STREAM, GOAWAY) goes to an outgoing buffer
(:meth:`H2Connection.data_to_send`). No socket, no event loop, no gRPC.

What happens to a stream is reported through hook methods (``_start_call``,
``_stream_data``, ``_stream_end``, ``_stream_reset``, ...). Used alone, they
record :data:`Event` values in :attr:`H2Connection.events`; the server
(:mod:`pycontainerd.api.h2grpc`) overrides them, so a call costs no event objects.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeAlias

from pycontainerd.api import h2hpack
from pycontainerd.api.h2hpack import HeaderListTooLargeError, HpackDecoder, HpackError

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types (RFC 9113 §6).
DATA: Final = 0x0
HEADERS: Final = 0x1
PRIORITY: Final = 0x2
RST_STREAM: Final = 0x3
SETTINGS: Final = 0x4
PUSH_PROMISE: Final = 0x5
PING: Final = 0x6
GOAWAY: Final = 0x7
WINDOW_UPDATE: Final = 0x8
CONTINUATION: Final = 0x9

# Flags.
END_STREAM: Final = 0x1
ACK: Final = 0x1
END_HEADERS: Final = 0x4
PADDED: Final = 0x8
PRIORITY_FLAG: Final = 0x20

# Error codes.
NO_ERROR: Final = 0x0
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
FLOW_CONTROL_ERROR: Final = 0x3
STREAM_CLOSED: Final = 0x5
FRAME_SIZE_ERROR: Final = 0x6
REFUSED_STREAM: Final = 0x7
CANCEL: Final = 0x8
COMPRESSION_ERROR: Final = 0x9
ENHANCE_YOUR_CALM: Final = 0xB

# Settings.
SETTINGS_HEADER_TABLE_SIZE: Final = 0x1
SETTINGS_ENABLE_PUSH: Final = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS: Final = 0x3
SETTINGS_INITIAL_WINDOW_SIZE: Final = 0x4
SETTINGS_MAX_FRAME_SIZE: Final = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE: Final = 0x6

DEFAULT_WINDOW: Final = 65_535
MAX_WINDOW: Final = 2**31 - 1
DEFAULT_FRAME: Final = 16_384
MAX_FRAME_SIZE: Final = 2**24 - 1
MAX_FRAME_ACCEPTED: Final = 1 << 20
"""The largest frame this server accepts (advertised in SETTINGS_MAX_FRAME_SIZE)."""

STREAM_WINDOW: Final = 4 << 20
"""Bytes a client may send on one stream before the handler has taken them."""

CONN_WINDOW: Final = 32 << 20
"""The connection-level receive window (reopened as DATA arrives)."""

MAX_HEADER_LIST: Final = h2hpack.MAX_HEADER_LIST
"""The default cap on a request's header list (grpc-go's): encoded block and decoded fields."""

FLOOD_STRIKES: Final = 1000
"""Frames that make the server work without a call making progress (PING, SETTINGS,
RST_STREAM, PRIORITY, empty DATA or CONTINUATION, tiny WINDOW_UPDATEs, refused streams)
a connection may send within a second and between two answers before it is closed
with ENHANCE_YOUR_CALM."""

MIN_DATA_CHUNK: Final = 1024
"""A WINDOW_UPDATE below this, for a window a writer waits on, and below a quarter
of the peer's initial window (or any, for a window under 256 bytes) counts as a
flood strike: a peer opening its window a byte at a time (data dribble) gets a
few small frames, then GOAWAY ENHANCE_YOUR_CALM."""

SEND_CHUNK: Final = 256 << 10
"""The most one writer queues on the transport before it checks the back-pressure again."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold of the server (the daemon's ``[grpc]`` keys set these).

    Attributes:
        max_concurrent_streams: calls in flight on one connection (advertised in
            SETTINGS_MAX_CONCURRENT_STREAMS; a call whose handler still runs after
            the client reset it counts until it ends). Beyond: RST_STREAM REFUSED_STREAM.
        max_connections: open connections; the next one gets GOAWAY ENHANCE_YOUR_CALM.
        handshake_timeout: seconds for a new connection to send the client preface
            and its SETTINGS (0: no limit).
        idle_timeout: seconds a connection may stay without a call before it is
            closed with GOAWAY NO_ERROR (0: no limit).
        max_header_list_size: the largest header list of a request, encoded and
            decoded (RFC 7541 sizes), advertised in SETTINGS_MAX_HEADER_LIST_SIZE.
    """

    max_concurrent_streams: int = 1000
    max_connections: int = 10_000
    handshake_timeout: float = 10.0
    idle_timeout: float = 1800.0
    max_header_list_size: int = MAX_HEADER_LIST


_FRAME_HEADER: Final = struct.Struct(">I B I")
"""Length (24 bits, packed with the type byte), flags, stream id."""

_SETTINGS_ENTRY: Final = struct.Struct(">HI")

_CANCELLED: Final = 1  # gRPC's CANCELLED: the status of a stream we reset


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame's bytes."""
    return _FRAME_HEADER.pack((len(payload) << 8) | kind, flags, stream_id) + payload


def goaway(last_stream: int, code: int, debug: bytes) -> bytes:
    """A GOAWAY frame."""
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream, code) + debug)


class H2ConnectionError(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY ``code`` with ``reason``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


# -- events (what H2Connection reports when used alone) ----------------------


class RequestHeaders(NamedTuple):
    """A new stream's decoded request header list."""

    stream_id: int
    headers: list[tuple[str, str]]
    end_stream: bool


class RequestData(NamedTuple):
    """Request bytes (padding removed) on an open stream."""

    stream_id: int
    data: bytes


class StreamEnded(NamedTuple):
    """The client half-closed a stream (END_STREAM)."""

    stream_id: int


class StreamReset(NamedTuple):
    """A stream ended by RST_STREAM: ``by_peer`` the client's, else ours with ``code``."""

    stream_id: int
    code: int
    by_peer: bool


class WindowOpened(NamedTuple):
    """The client opened a send window (``stream_id`` 0: the connection's, or all)."""

    stream_id: int


class ConnectionTerminated(NamedTuple):
    """A connection error: GOAWAY ``code`` was queued, nothing more is read."""

    code: int
    reason: str


Event: TypeAlias = (
    RequestHeaders | RequestData | StreamEnded | StreamReset | WindowOpened | ConnectionTerminated
)


class H2Stream:
    """The HTTP/2 state of one stream (the server's streams extend it)."""

    __slots__ = ("closed", "code", "ended", "held", "id", "recv_window", "send_window", "unacked")

    def __init__(self, stream_id: int, send_window: int) -> None:
        self.id = stream_id
        self.ended = False  # the client half-closed (END_STREAM received)
        self.closed = False  # our side ended (trailers or RST_STREAM sent)
        self.send_window = send_window
        self.recv_window = STREAM_WINDOW  # what the client may still send on this stream
        self.held = 0  # request bytes received and not yet taken by the handler
        self.unacked = 0  # request bytes taken and not yet given back by WINDOW_UPDATE
        self.code = -1  # the gRPC status sent; -1 until then


class H2Connection:
    """One client connection's HTTP/2 state: bytes in, events and bytes out."""

    def __init__(self, limits: Limits | None = None, max_receive: int = 4 << 20) -> None:
        self.limits = limits = limits or Limits()
        self.max_receive = max_receive  # the largest request message (for ``grant``)
        self.buf = bytearray()
        self.need = 0  # bytes ``buf`` must hold before a frame can be parsed
        self.preface = False
        self.settled = False  # the client's first SETTINGS arrived
        self.decoder = HpackDecoder(max_list=limits.max_header_list_size)
        self.streams: dict[int, H2Stream] = {}
        self.orphans = 0  # handlers still running for streams the client reset
        self.last_stream = 0
        self.peer_initial_window = DEFAULT_WINDOW
        self.send_window = DEFAULT_WINDOW
        self.max_frame = DEFAULT_FRAME
        self.recv_window = CONN_WINDOW  # what the client may still send on the connection
        self.buffered = 0  # request bytes received and not yet taken by handlers
        self.strikes = 0
        self.strikes_since = time.monotonic()
        self.header_block: bytearray | None = None
        self.header_stream = 0
        self.header_flags = 0
        self.window_waiters: set[H2Stream] = set()  # streams whose writer waits for a window
        self.going_away = False
        self.terminated = False  # a connection error was answered: read nothing more
        self.out: list[bytes] = []
        self.out_size = 0  # bytes in ``out``
        self.events: list[Event] = []

    # -- the sans-I/O surface ------------------------------------------------

    def preamble(self) -> bytes:
        """The server's connection preface: SETTINGS, then the connection window's growth."""
        limits = self.limits
        settings = struct.pack(
            ">HIHIHIHI",
            SETTINGS_MAX_CONCURRENT_STREAMS,
            limits.max_concurrent_streams,
            SETTINGS_INITIAL_WINDOW_SIZE,
            STREAM_WINDOW,
            SETTINGS_MAX_FRAME_SIZE,
            MAX_FRAME_ACCEPTED,
            SETTINGS_MAX_HEADER_LIST_SIZE,
            limits.max_header_list_size,
        )
        return frame(SETTINGS, 0, 0, settings) + frame(
            WINDOW_UPDATE, 0, 0, (CONN_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big")
        )

    def receive_data(self, data: bytes) -> list[Event]:
        """Take bytes from the client; the events they caused (and clear them)."""
        if not self.terminated:
            try:
                self._feed(data)
            except H2ConnectionError as exc:
                self.terminate(exc.code, exc.reason)
        events, self.events = self.events, []
        return events

    def data_to_send(self) -> bytes:
        """The bytes queued for the client (and clear them)."""
        data = b"".join(self.out)
        self.out.clear()
        self.out_size = 0
        return data

    def terminate(self, code: int, reason: str) -> None:
        """Queue GOAWAY ``code`` and read nothing more."""
        self.write(goaway(self.last_stream, code, reason.encode()))
        self.terminated = True
        self.events.append(ConnectionTerminated(code, reason))

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the client."""
        self.out.append(data)
        self.out_size += len(data)

    # -- hooks: what a server overrides ------------------------------------------

    def _closing(self) -> bool:
        """Whether the connection is closing (stop parsing the frames received)."""
        return self.terminated

    def _refusing(self) -> bool:
        """Whether new streams are refused (GOAWAY sent, or the server stops)."""
        return self.going_away

    def _start_call(self, sid: int, flags: int, headers: list[tuple[str, str]]) -> None:
        """A new stream with its request header list."""
        stream = H2Stream(sid, self.peer_initial_window)
        stream.ended = bool(flags & END_STREAM)
        self.streams[sid] = stream
        self.events.append(RequestHeaders(sid, headers, stream.ended))

    def _stream_data(self, stream: H2Stream, data: bytes | memoryview) -> None:
        """Request bytes on ``stream`` (held until taken: :meth:`consumed`).

        ``data`` may be a view of the bytes read: valid during the call only.
        """
        stream.held += len(data)
        self.buffered += len(data)
        self.events.append(RequestData(stream.id, bytes(data)))

    def _stream_end(self, stream: H2Stream) -> None:
        """The client half-closed ``stream``."""
        stream.ended = True
        self.events.append(StreamEnded(stream.id))

    def _stream_reset(self, stream: H2Stream) -> None:
        """The client reset ``stream`` (already out of ``streams``, marked closed)."""
        self.window_waiters.discard(stream)
        self.events.append(StreamReset(stream.id, CANCEL, by_peer=True))

    def _stream_aborted(self, stream: H2Stream, code: int) -> None:
        """We reset ``stream`` with ``code`` (RST_STREAM already queued)."""
        self.streams.pop(stream.id, None)
        self.window_waiters.discard(stream)
        self.events.append(StreamReset(stream.id, code, by_peer=False))

    def _window_opened(self, stream: H2Stream | None) -> None:
        """A send window grew: ``stream``'s, or (None) the connection's or all streams'."""
        self.events.append(WindowOpened(0 if stream is None else stream.id))

    # -- receiving -----------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        """Parse ``data``, after the partial frame ``buf`` may hold.

        Only what that frame lacks is copied into ``buf``; the rest of ``data``
        is parsed where it is (a read of 256 KiB mostly ends inside a frame,
        and copying every read whole was two copies of each request byte).
        """
        buf = self.buf
        pos = 0
        while buf:
            take = self.need - len(buf)
            if take > len(data) - pos:
                buf += data[pos:]  # a frame dribbled in: nothing to parse yet
                return
            buf += data[pos : pos + take]
            pos += take
            head = bytes(buf)
            buf.clear()
            self._receive(head)  # a frame's header alone goes back into ``buf``
            if self._closing():
                return
        if pos < len(data):
            self._receive(data, pos)

    def _receive(self, data: bytes, pos: int = 0) -> None:
        """Parse the frames of ``data`` from ``pos``; keep a partial last one in ``buf``."""
        if not self.preface:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise H2ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self.buf += data
                self.need = len(PREFACE)
                return
            if not data.startswith(PREFACE):
                raise H2ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
            pos = len(PREFACE)
            self.preface = True
        end = len(data)
        on_frame = self._on_frame
        view = memoryview(data)  # DATA payloads are handed on uncopied
        while end - pos >= 9:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > MAX_FRAME_ACCEPTED:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "frame too large")
            if end - pos < 9 + length:
                self.need = 9 + length
                break
            kind = data[pos + 3]
            flags = data[pos + 4]
            sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            start = pos + 9
            pos = start + length
            if kind == DATA and self.header_block is None and self.settled:
                self._on_data(flags, sid, view[start:pos])
            else:
                on_frame(kind, flags, sid, data[start:pos])
            if self._closing():
                return
        else:
            self.need = 9
        if pos < end:
            self.buf += data[pos:]

    # -- frames ---------------------------------------------------------------

    def _strike(self, what: str) -> None:
        """Count a frame that makes the server work for no call's progress.

        ``FLOOD_STRIKES`` of them within one second, with no call answered in
        between, is a flood; a slower trickle (a long call's pings) is not.
        """
        self.strikes += 1
        if self.strikes > FLOOD_STRIKES:
            now = time.monotonic()
            if now - self.strikes_since < 1.0:
                raise H2ConnectionError(ENHANCE_YOUR_CALM, f"too many {what} frames")
            self.strikes = 1
            self.strikes_since = now

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:  # noqa: PLR0912
        if self.header_block is not None and kind != CONTINUATION:
            raise H2ConnectionError(PROTOCOL_ERROR, "expected CONTINUATION")
        if not self.settled and kind != SETTINGS:
            raise H2ConnectionError(PROTOCOL_ERROR, "the client preface must start with SETTINGS")
        if kind == DATA:
            self._on_data(flags, sid, payload)
        elif kind == HEADERS:
            self._on_headers(flags, sid, payload)
        elif kind == CONTINUATION:
            self._on_continuation(flags, sid, payload)
        elif kind == SETTINGS:
            self._on_settings(flags, sid, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(sid, payload)
        elif kind == PING:
            if sid != 0:
                raise H2ConnectionError(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "PING payload not 8 octets")
            if not flags & ACK:
                self._strike("PING")
                self.write(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self._on_reset(sid, payload)
        elif kind == PRIORITY:
            if sid == 0:
                raise H2ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(sid, FRAME_SIZE_ERROR)
            self._strike("PRIORITY")
        elif kind == GOAWAY:
            if sid != 0:
                raise H2ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets")
            self.going_away = True
        elif kind == PUSH_PROMISE:
            raise H2ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:  # unknown frame types are ignored (RFC 9113 §4.1), but not for free
            self._strike("unknown")

    def _on_data(self, flags: int, sid: int, payload: bytes | memoryview) -> None:
        if sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise H2ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        stream = self.streams.get(sid)
        if stream is None or stream.ended:
            if sid > self.last_stream:
                raise H2ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            if stream is not None:  # half-closed (remote): RFC 9113 §5.1
                self._reset_stream(stream, STREAM_CLOSED)
            self.replenish()
            return
        stream.recv_window -= size
        if stream.recv_window < 0:
            self._reset_stream(stream, FLOW_CONTROL_ERROR)
            self.replenish()
            return
        if flags & PADDED:
            if not size or payload[0] >= size:
                raise H2ConnectionError(PROTOCOL_ERROR, "DATA padding longer than the frame")
            pad = payload[0]
            payload = payload[1 : size - pad]
            stream.unacked += pad + 1
        if payload:
            self._stream_data(stream, payload)
        elif not flags & END_STREAM:
            self._strike("empty DATA")
        if size - len(payload):
            self.replenish()
        if flags & END_STREAM:
            self._stream_end(stream)

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        if flags & PADDED:
            if not end or payload[0] >= end:
                raise H2ConnectionError(PROTOCOL_ERROR, "HEADERS padding longer than the frame")
            start = 1
            end -= payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
            if start > end:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
        block = payload[start:end]
        if flags & END_HEADERS:
            self._on_header_block(sid, flags, block)
        else:
            if len(block) > self.limits.max_header_list_size:
                raise H2ConnectionError(PROTOCOL_ERROR, "header block too large")
            if not block:
                self._strike("empty HEADERS")
            self.header_block = bytearray(block)
            self.header_stream = sid
            self.header_flags = flags

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self.header_block is None or sid != self.header_stream:
            raise H2ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        if not payload and not flags & END_HEADERS:
            self._strike("empty CONTINUATION")
        self.header_block += payload
        if len(self.header_block) > self.limits.max_header_list_size:
            raise H2ConnectionError(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            block = bytes(self.header_block)
            self.header_block = None
            self._on_header_block(self.header_stream, self.header_flags, block)

    def _on_header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except HeaderListTooLargeError as exc:
            raise H2ConnectionError(COMPRESSION_ERROR, str(exc)) from None
        except HpackError as exc:
            raise H2ConnectionError(COMPRESSION_ERROR, f"header block: {exc}") from None
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from a client: only END_STREAM matters
            if stream.ended:
                self._reset_stream(stream, STREAM_CLOSED)
            elif not flags & END_STREAM:
                self._reset_stream(stream, PROTOCOL_ERROR)  # trailers must end the stream
            else:
                self._stream_end(stream)
            return
        if sid % 2 == 0 or sid <= self.last_stream:
            if sid % 2 or sid == 0:
                raise H2ConnectionError(PROTOCOL_ERROR, f"HEADERS on closed stream {sid}")
            raise H2ConnectionError(PROTOCOL_ERROR, f"invalid stream id {sid}")
        self.last_stream = sid
        if self._refusing():
            self.write(frame(RST_STREAM, 0, sid, REFUSED_STREAM.to_bytes(4, "big")))
            return
        if len(self.streams) + self.orphans >= self.limits.max_concurrent_streams:
            self._strike("refused HEADERS")
            self.write(frame(RST_STREAM, 0, sid, REFUSED_STREAM.to_bytes(4, "big")))
            return
        self._start_call(sid, flags, headers)

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:  # noqa: PLR0912
        if sid != 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise H2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ack with a payload")
            return
        if len(payload) % 6:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        if self.settled:
            self._strike("SETTINGS")
        else:
            self.settled = True
        for ident, value in _SETTINGS_ENTRY.iter_unpack(payload):
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise H2ConnectionError(FLOW_CONTROL_ERROR, "initial window above 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise H2ConnectionError(FLOW_CONTROL_ERROR, "stream window above 2^31-1")
                self._window_opened(None)
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= MAX_FRAME_SIZE:
                    raise H2ConnectionError(PROTOCOL_ERROR, f"invalid max frame size {value}")
                self.max_frame = value
            elif ident == SETTINGS_ENABLE_PUSH and value > 1:
                raise H2ConnectionError(PROTOCOL_ERROR, f"invalid enable push {value}")
        self.write(frame(SETTINGS, ACK, 0))

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload not 4 octets")
        inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise H2ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            if inc < MIN_DATA_CHUNK and self.window_waiters:
                self._strike("small WINDOW_UPDATE")
            self.send_window += inc
            if self.send_window > MAX_WINDOW:
                raise H2ConnectionError(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._window_opened(None)
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream:
                raise H2ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return
        if inc == 0:
            self._reset_stream(stream, PROTOCOL_ERROR)
            return
        # A closed window that a writer waits on, reopened by less than a quarter
        # of the client's window (any step, for a window under 256 bytes), is the
        # dribble of CVE-2019-9511; small steps of an open window are ordinary
        # (grpcio's client acknowledges every message it reads).
        initial = self.peer_initial_window
        if (
            inc < MIN_DATA_CHUNK
            and stream in self.window_waiters
            and (inc < initial // 4 or initial < 256)
        ):
            self._strike("small WINDOW_UPDATE")
        stream.send_window += inc
        if stream.send_window > MAX_WINDOW:
            self._reset_stream(stream, FLOW_CONTROL_ERROR)
            return
        if stream in self.window_waiters:
            self._window_opened(stream)

    def _on_reset(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise H2ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise H2ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM payload not 4 octets")
        if sid > self.last_stream:
            raise H2ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        self._strike("RST_STREAM")  # rapid reset (CVE-2023-44487) ends here
        stream = self.streams.pop(sid, None)
        if stream is not None:
            stream.closed = True
            self._stream_reset(stream)

    def _stream_error(self, sid: int, code: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            self._reset_stream(stream, code)
        else:
            self.write(frame(RST_STREAM, 0, sid, code.to_bytes(4, "big")))

    def _reset_stream(self, stream: H2Stream, code: int) -> None:
        """A stream error (RFC 9113 §5.4.2): RST_STREAM ``code``, the stream closed."""
        self.write(frame(RST_STREAM, 0, stream.id, code.to_bytes(4, "big")))
        stream.ended = True  # no RST_STREAM NO_ERROR after this one
        stream.closed = True
        stream.code = _CANCELLED
        self._stream_aborted(stream, code)
        self._strike("stream error")

    def consumed(self, n: int) -> None:
        """A handler took ``n`` buffered request bytes: reopen the connection window."""
        self.buffered -= n
        self.replenish()

    def replenish(self) -> None:
        """Reopen the connection window as far as the buffered requests allow.

        The client may send up to ``CONN_WINDOW`` bytes that no handler has
        taken yet, whatever its stream windows say: what one connection holds
        of requests is bounded by that, plus the grants below.
        """
        free = CONN_WINDOW - self.recv_window - self.buffered
        if free >= CONN_WINDOW // 2:
            self.recv_window += free
            self.write(frame(WINDOW_UPDATE, 0, 0, free.to_bytes(4, "big")))

    def grant(self, need: int) -> None:
        """Let the connection window take ``need`` more bytes of one incomplete message.

        Only while what is buffered stays under ``CONN_WINDOW`` plus one
        largest message; otherwise the message waits for other calls to take theirs.
        """
        short = need - self.recv_window
        if short > 0 and self.buffered + need <= CONN_WINDOW + self.max_receive:
            self.recv_window += short
            self.write(frame(WINDOW_UPDATE, 0, 0, short.to_bytes(4, "big")))

    # -- writing ----------------------------------------------------------------

    def headers_frames(self, sid: int, block: bytes, *, end_stream: bool) -> bytes:
        flags = END_STREAM if end_stream else 0
        limit = self.max_frame
        if len(block) <= limit:
            return frame(HEADERS, flags | END_HEADERS, sid, block)
        parts = [frame(HEADERS, flags, sid, block[:limit])]
        rest = block[limit:]
        while rest:
            chunk, rest = rest[:limit], rest[limit:]
            parts.append(frame(CONTINUATION, 0 if rest else END_HEADERS, sid, chunk))
        return b"".join(parts)
