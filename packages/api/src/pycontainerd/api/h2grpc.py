"""A gRPC server over HTTP/2 on asyncio, for the daemon's unix socket.

grpcio's asyncio server costs 400-500 µs of CPU per call and about 100 µs per
streamed message, whatever the handler does (``bench/grpc_floor.py``). That
floor decides how fast the Go ``ctr`` can read content (one ``Content.Read``
call per 32 KiB), list images (several calls per image) or create containers.
This server speaks the same wire protocol — HTTP/2 framing, HPACK headers,
gRPC's length-prefixed messages and status trailers — with a per-call cost a
few times lower, and serves the servicers grpcio's generated
``add_*Servicer_to_server`` functions register, unchanged:

- :meth:`Server.add_registered_method_handlers` and
  :meth:`Server.add_generic_rpc_handlers` take what the generated code passes;
- handlers are grpc.aio style: ``async def M(request, context)`` returning the
  response, async generators for server streams, coroutines that call
  ``await context.write(...)``, request iterators for client streams;
- the handler's ``context`` (:class:`ServicerContext`) offers what grpc.aio's
  does: ``invocation_metadata``, ``abort`` (raises :class:`grpc.aio.AbortError`),
  ``set_code``/``set_details``/``code``/``details``, ``write``, ``read``,
  (and ``write_encoded`` for pre-serialized runs of messages),
  ``send_initial_metadata``, ``set_trailing_metadata``, ``time_remaining``,
  ``cancelled``, ``done``, ``peer``, ``add_done_callback``;
- ``grpc.aio.ServerInterceptor`` objects are applied per call, as grpcio does.

What it does not do: TLS, compression (no ``grpc-accept-encoding`` is
advertised, so clients send plain messages; a compressed one is refused with
UNIMPLEMENTED), server push. The daemon keeps grpcio for its TCP listener.

Flow control: each stream may have ``STREAM_WINDOW`` bytes in flight from the
client; the window reopens as the handler takes messages, so a slow handler
holds back its own client, not the connection. The connection window
(``CONN_WINDOW``) reopens as far as the bytes no handler has taken yet allow,
which bounds what one connection holds of requests. Outgoing DATA respects the
client's windows and the transport's high-water mark, so ``context.write``
waits for a slow reader, and the server stops reading a client that does not
read its answers.

Hostile clients: every RFC 9113 rule ends in the error the RFC names
(GOAWAY for connection errors, RST_STREAM for stream errors), and
:class:`Limits` bounds calls per connection, connections, the handshake and
idle time and the header list; frames that make the server work for no call
(PING, SETTINGS, RST_STREAM, empty frames, tiny WINDOW_UPDATEs) are counted
and a flood ends in GOAWAY ENHANCE_YOUR_CALM. HPACK lives in
:mod:`pycontainerd.api.h2hpack`. The api README has the table.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import os
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeAlias, cast

import grpc
import grpc.aio

from pycontainerd.api import h2hpack
from pycontainerd.api.h2hpack import (
    HeaderListTooLargeError,
    HpackDecoder,
    HpackError,
)
from pycontainerd.api.h2hpack import literal as _literal

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

__all__ = ["CallObserver", "FastPath", "Limits", "Server", "ServicerContext", "rpc_type"]

log = logging.getLogger("pycontainerd.api.h2grpc")

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

_STATUS_NAMES: Final = {sc.value[0]: sc for sc in grpc.StatusCode}

# HPACK blocks this server sends: no dynamic table (clients' decoders never
# have to track ours), literals without indexing.
_RESPONSE_HEADERS: Final = (
    b"\x88"  # :status 200 (static index 8)
    + b"\x0f\x10\x10application/grpc"  # content-type (static name 31), literal value
)


def _percent_encode(text: str) -> bytes:
    """GRPC's ``grpc-message`` encoding: bytes outside 0x20-0x7E and ``%`` as ``%XX``."""
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def _metadata_block(metadata: Iterable[tuple[str, str | bytes]]) -> bytes:
    parts = []
    for key, value in metadata:
        k = key.lower()
        if k.endswith("-bin"):
            raw = value if isinstance(value, bytes) else value.encode()
            v = base64.b64encode(raw).rstrip(b"=")
        else:
            v = value.encode() if isinstance(value, str) else value
        parts.append(_literal(k.encode(), v))
    return b"".join(parts)


def _trailers_block(code: int, details: str, trailing: bytes) -> bytes:
    block = _literal(b"grpc-status", str(code).encode())
    if details:
        block += _literal(b"grpc-message", _percent_encode(details))
    return block + trailing


_TIMEOUT_UNITS: Final = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}


def parse_timeout(value: str) -> float | None:
    """Seconds in a ``grpc-timeout`` header (``"100m"``, ``"5S"``); None if malformed.

    At most 8 ASCII digits and a unit, as gRPC's wire format says.
    """
    digits = value[:-1]
    if not 2 <= len(value) <= 9 or not digits.isascii() or not digits.isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    return int(value[:-1]) * unit if unit is not None else None


def _frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return _FRAME_HEADER.pack((len(payload) << 8) | kind, flags, stream_id) + payload


class _CallDetails(NamedTuple):
    """What a generic handler or an interceptor sees of a call (``grpc.HandlerCallDetails``)."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


class _Reset(Exception):  # noqa: N818 - an internal signal, not an error for users
    """The stream ended before the handler finished (client reset, connection lost)."""


class ServicerContext:
    """The ``context`` a handler gets: grpc.aio's ``ServicerContext`` surface."""

    __slots__ = (
        "_callbacks",
        "_code",
        "_details",
        "_serializer",
        "_stream",
        "_trailing",
    )

    def __init__(self, stream: _Stream, serializer: Callable[[Any], bytes] | None) -> None:
        self._stream = stream
        self._serializer = serializer
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()
        self._callbacks: list[Callable[[ServicerContext], None]] | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._stream.metadata

    def peer(self) -> str:
        return "unix:"

    def time_remaining(self) -> float | None:
        deadline = self._stream.deadline
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def details(self) -> str:
        return self._details

    def set_trailing_metadata(self, trailing_metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(trailing_metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing

    async def abort(
        self,
        code: grpc.StatusCode,
        details: str = "",
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
    ) -> None:
        if code is grpc.StatusCode.OK:
            msg = "abort() with OK is not allowed"
            raise ValueError(msg)
        self._code = code
        self._details = details
        if trailing_metadata:
            self._trailing = tuple(trailing_metadata)
        raise grpc.aio.AbortError

    async def send_initial_metadata(self, initial_metadata: Sequence[tuple[str, Any]]) -> None:
        self._stream.send_headers(_metadata_block(initial_metadata))

    async def write(self, message: Any) -> None:
        """Send one response message; bytes go out as they are (pre-serialized)."""
        data = message if isinstance(message, bytes) else self._serialize(message)
        await self._stream.send_message(data)

    async def write_encoded(self, messages: Sequence[bytes]) -> None:
        """Send a server stream's serialized messages in one pass over the windows.

        For long listings: one length-prefixed run of bytes instead of a trip
        through the handler's generator per message. Not part of grpc.aio's
        context; handlers look for it with ``getattr``.
        """
        stream = self._stream
        if stream.closed:
            raise _Reset
        limit = stream.conn.server.max_send
        for m in messages:
            if len(m) > limit:
                msg = f"grpc: trying to send message larger than max ({len(m)} vs. {limit})"
                raise _CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, msg)
        if not messages:
            return
        if not stream.headers_sent:
            stream.send_headers()
        # a message's prefix: a zero compression flag, then its length in 4 bytes
        await stream.conn.send_data(
            stream, b"".join(len(m).to_bytes(5, "big") + m for m in messages)
        )

    async def read(self) -> Any:
        """The next request message of a client stream (``grpc.aio.EOF`` at the end)."""
        item = await self._stream.next_request()
        return grpc.aio.EOF if item is None else item

    def cancelled(self) -> bool:
        return self._stream.cancelled

    def done(self) -> bool:
        return self._stream.closed

    def add_done_callback(self, callback: Callable[[ServicerContext], None]) -> None:
        if self._callbacks is None:
            self._callbacks = []
        self._callbacks.append(callback)

    def _serialize(self, message: Any) -> bytes:
        if self._serializer is None:
            return bytes(message.SerializeToString())
        return self._serializer(message)

    def _run_callbacks(self) -> None:
        for cb in self._callbacks or ():
            try:
                cb(self)
            except Exception:
                log.exception("done callback failed")


class _Stream:
    """One HTTP/2 stream: one call."""

    __slots__ = (
        "buffer",
        "cancelled",
        "closed",
        "code",
        "conn",
        "context",
        "deadline",
        "deserializer",
        "ended",
        "fast",
        "headers_sent",
        "held",
        "id",
        "messages",
        "metadata",
        "method",
        "recv_window",
        "send_window",
        "task",
        "timeout",
        "unacked",
        "waiter",
        "window_waiter",
    )

    def __init__(self, conn: _Connection, stream_id: int, method: str) -> None:
        self.conn = conn
        self.id = stream_id
        self.method = method
        self.metadata: tuple[tuple[str, str | bytes], ...] = ()
        self.deadline: float | None = None
        self.buffer = bytearray()
        self.messages: collections.deque[bytes] = collections.deque()
        self.ended = False  # the client half-closed (END_STREAM received)
        self.waiter: asyncio.Future[None] | None = None
        self.send_window = conn.peer_initial_window
        self.recv_window = STREAM_WINDOW  # what the client may still send on this stream
        self.held = 0  # request bytes received and not yet taken by the handler
        self.window_waiter: asyncio.Future[None] | None = None
        self.headers_sent = False
        self.closed = False  # our side ended (trailers or RST_STREAM sent)
        self.cancelled = False
        self.unacked = 0
        self.task: asyncio.Task[None] | None = None
        self.deserializer: Callable[[bytes], Any] | None = None
        self.context: ServicerContext | None = None
        self.code = -1  # the status sent; -1 until then
        self.fast: FastPath | None = None
        self.timeout: float | None = None

    # -- receiving -------------------------------------------------------

    def on_data(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        self.held += len(data)
        self.conn.buffered += len(data)
        limit = self.conn.server.max_receive
        while len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if length > limit:
                self.conn.fail_stream(
                    self,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"grpc: received message larger than max ({length} vs. {limit})",
                )
                return
            if len(buf) < 5 + length:
                break
            if buf[0]:
                self.conn.fail_stream(
                    self,
                    grpc.StatusCode.UNIMPLEMENTED,
                    "grpc: compressed messages are not supported (no grpc-accept-encoding)",
                )
                return
            self.messages.append(bytes(buf[5 : 5 + length]))
            del buf[: 5 + length]
        self._wake()

    def drop(self) -> None:
        """Forget the request bytes nobody will take (the call ended or was reset)."""
        if self.held:
            self.conn.consumed(self.held)
            self.held = 0
        self.messages.clear()
        self.buffer.clear()

    def on_end(self) -> None:
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def next_raw(self) -> bytes | None:
        """The next request message's bytes; None once the client half-closed."""
        while not self.messages:
            if self.ended or self.cancelled:
                if self.cancelled:
                    raise _Reset
                return None
            if len(self.buffer) >= 5:
                self._open_window_for_partial()
            self.waiter = self.conn.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        data = self.messages.popleft()
        n = len(data) + 5
        if self.held >= n:
            self.held -= n
            conn = self.conn
            conn.buffered -= n
            if CONN_WINDOW - conn.recv_window - conn.buffered >= CONN_WINDOW // 2:
                conn.replenish()
        if not self.ended:
            self.unacked += n
            if self.unacked >= STREAM_WINDOW // 2:
                self.recv_window += self.unacked
                self.conn.write(_frame(WINDOW_UPDATE, 0, self.id, self.unacked.to_bytes(4, "big")))
                self.unacked = 0
        return data

    def _open_window_for_partial(self) -> None:
        """Let the client send the rest of a message that the window would cut off.

        Taken messages reopen the window, so a message larger than what is left
        of it (a big message, or one after small ones not yet acknowledged)
        would never complete. With no message queued the client may still send
        ``STREAM_WINDOW - len(buffer) - unacked`` bytes; the missing amount is
        granted now and counted against ``unacked``.
        """
        need = 5 + int.from_bytes(self.buffer[1:5], "big") - len(self.buffer)
        if need > self.recv_window:
            grant = need - self.recv_window
            self.unacked -= grant
            self.recv_window += grant
            self.conn.write(_frame(WINDOW_UPDATE, 0, self.id, grant.to_bytes(4, "big")))
        self.conn.grant(need)

    async def next_request(self) -> Any:
        data = await self.next_raw()
        if data is None:
            return None
        return self.decode(data)

    def decode(self, data: bytes) -> Any:
        """A request message; bytes that do not parse end the call with INTERNAL (as grpc-go)."""
        deserialize = self.deserializer or _identity
        try:
            return deserialize(data)
        except Exception as exc:
            msg = f"grpc: error unmarshalling request: {exc}"
            raise _CallError(grpc.StatusCode.INTERNAL, msg) from exc

    async def requests(self) -> AsyncIterator[Any]:
        while True:
            item = await self.next_request()
            if item is None:
                return
            yield item

    # -- sending ---------------------------------------------------------

    def send_headers(self, extra: bytes = b"") -> None:
        if self.headers_sent or self.closed:
            return
        self.headers_sent = True
        # Queued: response headers leave with the first message or the trailers.
        self.conn.queue(
            self.conn.headers_frames(self.id, _RESPONSE_HEADERS + extra, end_stream=False)
        )

    async def send_message(self, data: bytes) -> None:
        if self.closed:
            raise _Reset
        limit = self.conn.server.max_send
        if len(data) > limit:
            msg = f"grpc: trying to send message larger than max ({len(data)} vs. {limit})"
            raise _CallError(grpc.StatusCode.RESOURCE_EXHAUSTED, msg)
        if not self.headers_sent:
            self.send_headers()
        payload = b"\x00" + len(data).to_bytes(4, "big") + data
        conn = self.conn
        size = len(payload)
        if (
            conn.paused is None
            and conn.out_size < SEND_CHUNK
            and size <= min(conn.send_window, self.send_window, conn.max_frame)
        ):
            # The common small message: one frame, queued with the others of this step.
            conn.send_window -= size
            self.send_window -= size
            conn.queue(_frame(DATA, 0, self.id, payload))
            return
        await conn.send_data(self, payload)

    def finish(
        self, code: int, details: str, trailing: bytes = b"", last: bytes | None = None
    ) -> None:
        """End the call: optional last message, then the status trailers."""
        if self.closed:
            return
        conn = self.conn
        out = []
        if last is not None:
            payload = b"\x00" + len(last).to_bytes(4, "big") + last
            size = len(payload)
            if size > min(conn.send_window, self.send_window):
                msg = "finish() with a last message that does not fit the windows"
                raise AssertionError(msg)
            if not self.headers_sent:
                self.headers_sent = True
                out.append(conn.headers_frames(self.id, _RESPONSE_HEADERS, end_stream=False))
            conn.send_window -= size
            self.send_window -= size
            limit = conn.max_frame
            out.extend(
                _frame(DATA, 0, self.id, payload[off : off + limit])
                for off in range(0, size, limit)
            )
        block = _trailers_block(code, details, trailing)
        if not self.headers_sent:
            block = _RESPONSE_HEADERS + block  # Trailers-Only
            self.headers_sent = True
        out.append(conn.headers_frames(self.id, block, end_stream=True))
        self.closed = True
        self.code = code
        conn.write(b"".join(out))
        conn.stream_closed(self)


class _CallError(Exception):
    """Ends a call with ``code`` and ``details`` (raised inside the server, never to handlers)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _CallHeaders(NamedTuple):
    """What a request's header fields say."""

    method: str
    metadata: tuple[tuple[str, str | bytes], ...]
    timeout: float | None
    error: str  # a malformed gRPC field (the call ends INTERNAL); empty if none


_NO_CALL: Final = _CallHeaders("", (), None, "")


class _ConnectionError(Exception):
    """A connection error (RFC 9113 §5.4.1): GOAWAY ``code`` with ``reason``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


_SETTINGS_ENTRY: Final = struct.Struct(">HI")


class _Connection(asyncio.Protocol):
    """One client connection: frame parsing, HPACK, windows, streams and limits."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = 0  # bytes ``buf`` must hold before a frame can be parsed
        self.preface = False
        self.settled = False  # the client's first SETTINGS arrived
        self.decoder = HpackDecoder(max_list=self.limits.max_header_list_size)
        self.streams: dict[int, _Stream] = {}
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
        self.window_waiters: set[_Stream] = set()
        self.paused: asyncio.Future[None] | None = None
        self.going_away = False
        self.out: list[bytes] = []
        self.out_size = 0  # bytes in ``out``
        self.flush_scheduled = False
        self.receiving = False
        self.spawned = False
        self.idle: asyncio.Event = asyncio.Event()
        self.idle.set()
        self.idle_since = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.last_headers: list[tuple[str, str]] | None = None
        self.last_parsed = _NO_CALL

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)
        limits = self.limits
        if len(self.server.connections) >= limits.max_connections:
            # Our preface, then the refusal: a client reads why instead of a bare close.
            self.transport.write(
                _frame(SETTINGS, 0, 0) + _goaway(0, ENHANCE_YOUR_CALM, b"too many connections")
            )
            self.transport.close()
            self.transport = None
            return
        self.server.connections.add(self)
        self.transport.set_write_buffer_limits(high=SEND_CHUNK)
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
        self.transport.write(
            _frame(SETTINGS, 0, 0, settings)
            + _frame(WINDOW_UPDATE, 0, 0, (CONN_WINDOW - DEFAULT_WINDOW).to_bytes(4, "big"))
        )
        if limits.handshake_timeout > 0:
            self.timer = self.loop.call_later(limits.handshake_timeout, self._handshake_expired)
        elif limits.idle_timeout > 0:
            self.timer = self.loop.call_later(limits.idle_timeout, self._idle_check)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for stream in list(self.streams.values()):
            self._cancel(stream)
            stream.drop()
        self.streams.clear()
        self.idle.set()
        for stream in self.window_waiters:
            _wake(stream.window_waiter)
        if self.paused is not None and not self.paused.done():
            self.paused.set_result(None)
        self.transport = None

    def pause_writing(self) -> None:
        # The client does not read what it is sent: read nothing more from it
        # either, so it cannot make us queue answers (PING and SETTINGS acks,
        # RST_STREAMs) it never takes (CVE-2019-9512, 9515, 9517).
        if self.paused is None:
            self.paused = self.loop.create_future()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.paused is not None:
            if not self.paused.done():
                self.paused.set_result(None)
            self.paused = None
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()

    # -- timers ------------------------------------------------------------

    def _handshake_expired(self) -> None:
        self.timer = None
        if not self.settled:
            self._abort_connection(PROTOCOL_ERROR, "no client preface and SETTINGS in time")
            return
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self.limits.idle_timeout > 0 and self.transport is not None:
            self.timer = self.loop.call_later(self.limits.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        """Close a connection that has had no call for ``idle_timeout`` seconds."""
        self.timer = None
        if self.transport is None:
            return
        if not self.streams and not self.orphans and self.header_block is None:
            left = self.idle_since + self.limits.idle_timeout - time.monotonic()
            if left <= 0:
                log.debug("closing an idle HTTP/2 connection")
                self.write(_goaway(self.last_stream, NO_ERROR, b"idle"))
                self.flush()
                self.transport.close()
                return
            self.timer = self.loop.call_later(left, self._idle_check)
            return
        self._arm_idle()

    # -- receiving -----------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # Frames written while these are handled (PING and SETTINGS acks) go out
        # after the calls they start have run their first step, with their answers.
        if self.buf:
            self.buf += data
            if len(self.buf) < self.need:
                return  # a frame dribbled in: nothing to parse yet, and no copy
            data = bytes(self.buf)
            self.buf.clear()
        self.receiving = True
        self.spawned = False
        try:
            self._receive(data)
        except _ConnectionError as exc:
            self._abort_connection(exc.code, exc.reason)
        except Exception:  # a bug must cost this connection, never the event loop
            log.exception("h2grpc: internal error reading a connection")
            self._abort_connection(INTERNAL_ERROR, "internal error")
        finally:
            self.receiving = False
            if self.out and not self.spawned:
                self.flush()  # answered here (fast path) or only acks: nothing to wait for
            elif self.out and not self.flush_scheduled:
                self.flush_scheduled = True
                self.loop.call_soon(self.flush)

    def _receive(self, data: bytes) -> None:
        pos = 0
        if not self.preface:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                self.buf += data
                self.need = len(PREFACE)
                return
            if not data.startswith(PREFACE):
                raise _ConnectionError(PROTOCOL_ERROR, "not an HTTP/2 client preface")
            pos = len(PREFACE)
            self.preface = True
        end = len(data)
        on_frame = self._on_frame
        while end - pos >= 9:
            length = (data[pos] << 16) | (data[pos + 1] << 8) | data[pos + 2]
            if length > MAX_FRAME_ACCEPTED:
                raise _ConnectionError(FRAME_SIZE_ERROR, "frame too large")
            if end - pos < 9 + length:
                self.need = 9 + length
                break
            kind = data[pos + 3]
            flags = data[pos + 4]
            sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            on_frame(kind, flags, sid, payload)
            if self.transport is None or self.transport.is_closing():
                return
        else:
            self.need = 9
        if pos < end:
            self.buf += data[pos:]

    # -- frames ------------------------------------------------------------

    def _strike(self, what: str) -> None:
        """Count a frame that makes the server work for no call's progress.

        ``FLOOD_STRIKES`` of them within one second, with no call answered in
        between, is a flood; a slower trickle (a long call's pings) is not.
        """
        self.strikes += 1
        if self.strikes > FLOOD_STRIKES:
            now = time.monotonic()
            if now - self.strikes_since < 1.0:
                raise _ConnectionError(ENHANCE_YOUR_CALM, f"too many {what} frames")
            self.strikes = 1
            self.strikes_since = now

    def _on_frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:  # noqa: PLR0912
        if self.header_block is not None and kind != CONTINUATION:
            raise _ConnectionError(PROTOCOL_ERROR, "expected CONTINUATION")
        if not self.settled and kind != SETTINGS:
            raise _ConnectionError(PROTOCOL_ERROR, "the client preface must start with SETTINGS")
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
                raise _ConnectionError(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise _ConnectionError(FRAME_SIZE_ERROR, "PING payload not 8 octets")
            if not flags & ACK:
                self._strike("PING")
                self.write(_frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self._on_reset(sid, payload)
        elif kind == PRIORITY:
            if sid == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(payload) != 5:
                self._stream_error(sid, FRAME_SIZE_ERROR)
            self._strike("PRIORITY")
        elif kind == GOAWAY:
            if sid != 0:
                raise _ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise _ConnectionError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets")
            self.going_away = True
        elif kind == PUSH_PROMISE:
            raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
        else:  # unknown frame types are ignored (RFC 9113 §4.1), but not for free
            self._strike("unknown")

    def _on_data(self, flags: int, sid: int, payload: bytes) -> None:  # noqa: PLR0912
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self.recv_window -= size
        if self.recv_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        stream = self.streams.get(sid)
        if stream is None or stream.ended:
            if sid > self.last_stream:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
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
                raise _ConnectionError(PROTOCOL_ERROR, "DATA padding longer than the frame")
            pad = payload[0]
            payload = payload[1 : size - pad]
            stream.unacked += pad + 1
        if payload:
            stream.on_data(payload)
        elif not flags & END_STREAM:
            self._strike("empty DATA")
        if size - len(payload):
            self.replenish()
        if flags & END_STREAM:
            stream.on_end()
            if stream.fast is not None and not stream.closed:
                self._run_fast(stream)

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        if flags & PADDED:
            if not end or payload[0] >= end:
                raise _ConnectionError(PROTOCOL_ERROR, "HEADERS padding longer than the frame")
            start = 1
            end -= payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
            if start > end:
                raise _ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
        block = payload[start:end]
        if flags & END_HEADERS:
            self._on_header_block(sid, flags, block)
        else:
            if len(block) > self.limits.max_header_list_size:
                raise _ConnectionError(PROTOCOL_ERROR, "header block too large")
            if not block:
                self._strike("empty HEADERS")
            self.header_block = bytearray(block)
            self.header_stream = sid
            self.header_flags = flags

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        if self.header_block is None or sid != self.header_stream:
            raise _ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        if not payload and not flags & END_HEADERS:
            self._strike("empty CONTINUATION")
        self.header_block += payload
        if len(self.header_block) > self.limits.max_header_list_size:
            raise _ConnectionError(PROTOCOL_ERROR, "header block too large")
        if flags & END_HEADERS:
            block = bytes(self.header_block)
            self.header_block = None
            self._on_header_block(self.header_stream, self.header_flags, block)

    def _on_header_block(self, sid: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except HeaderListTooLargeError as exc:
            raise _ConnectionError(COMPRESSION_ERROR, str(exc)) from None
        except HpackError as exc:
            raise _ConnectionError(COMPRESSION_ERROR, f"header block: {exc}") from None
        stream = self.streams.get(sid)
        if stream is not None:  # trailers from a client: only END_STREAM matters
            if stream.ended:
                self._reset_stream(stream, STREAM_CLOSED)
            elif not flags & END_STREAM:
                self._reset_stream(stream, PROTOCOL_ERROR)  # trailers must end the stream
            else:
                stream.on_end()
                if stream.fast is not None and not stream.closed:
                    self._run_fast(stream)
            return
        if sid % 2 == 0 or sid <= self.last_stream:
            if sid % 2 or sid == 0:
                raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS on closed stream {sid}")
            raise _ConnectionError(PROTOCOL_ERROR, f"invalid stream id {sid}")
        self.last_stream = sid
        if self.going_away or self.server.stopping:
            self.write(_frame(RST_STREAM, 0, sid, REFUSED_STREAM.to_bytes(4, "big")))
            return
        if len(self.streams) + self.orphans >= self.limits.max_concurrent_streams:
            self._strike("refused HEADERS")
            self.write(_frame(RST_STREAM, 0, sid, REFUSED_STREAM.to_bytes(4, "big")))
            return
        self._start_call(sid, flags, headers)

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:  # noqa: PLR0912
        if sid != 0:
            raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ack with a payload")
            return
        if len(payload) % 6:
            raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        if self.settled:
            self._strike("SETTINGS")
        else:
            self.settled = True
        for ident, value in _SETTINGS_ENTRY.iter_unpack(payload):
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _ConnectionError(FLOW_CONTROL_ERROR, "initial window above 2^31-1")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise _ConnectionError(FLOW_CONTROL_ERROR, "stream window above 2^31-1")
                self._wake_writers()
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= MAX_FRAME_SIZE:
                    raise _ConnectionError(PROTOCOL_ERROR, f"invalid max frame size {value}")
                self.max_frame = value
            elif ident == SETTINGS_ENABLE_PUSH and value > 1:
                raise _ConnectionError(PROTOCOL_ERROR, f"invalid enable push {value}")
        self.write(_frame(SETTINGS, ACK, 0))

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload not 4 octets")
        inc = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise _ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            if inc < MIN_DATA_CHUNK and self.window_waiters:
                self._strike("small WINDOW_UPDATE")
            self.send_window += inc
            if self.send_window > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._wake_writers()
            return
        stream = self.streams.get(sid)
        if stream is None:
            if sid > self.last_stream:
                raise _ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
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
            and stream.window_waiter is not None
            and (inc < initial // 4 or initial < 256)
        ):
            self._strike("small WINDOW_UPDATE")
        stream.send_window += inc
        if stream.send_window > MAX_WINDOW:
            self._reset_stream(stream, FLOW_CONTROL_ERROR)
            return
        if stream in self.window_waiters:
            _wake(stream.window_waiter)

    def _on_reset(self, sid: int, payload: bytes) -> None:
        if sid == 0:
            raise _ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM payload not 4 octets")
        if sid > self.last_stream:
            raise _ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        self._strike("RST_STREAM")  # rapid reset (CVE-2023-44487) ends here
        stream = self.streams.pop(sid, None)
        if stream is not None:
            stream.closed = True
            self._cancel(stream)
            stream.drop()
            self.window_waiters.discard(stream)
            if stream.task is not None and not stream.task.done():
                # Its handler still runs: the slot stays taken until it ends.
                self.orphans += 1
                stream.task.add_done_callback(self._orphan_done)
            self._check_idle()

    def _orphan_done(self, task: asyncio.Task[None]) -> None:
        self.orphans -= 1
        self._check_idle()

    def _wake_writers(self) -> None:
        for stream in self.window_waiters:
            _wake(stream.window_waiter)

    def _stream_error(self, sid: int, code: int) -> None:
        stream = self.streams.get(sid)
        if stream is not None:
            self._reset_stream(stream, code)
        else:
            self.write(_frame(RST_STREAM, 0, sid, code.to_bytes(4, "big")))

    def _reset_stream(self, stream: _Stream, code: int) -> None:
        """A stream error (RFC 9113 §5.4.2): RST_STREAM ``code``, the handler cancelled."""
        log.debug(
            "resetting an HTTP/2 stream", extra={"fields": {"stream": stream.id, "code": code}}
        )
        self.write(_frame(RST_STREAM, 0, stream.id, code.to_bytes(4, "big")))
        stream.ended = True  # no RST_STREAM NO_ERROR after this one
        stream.closed = True
        stream.code = grpc.StatusCode.CANCELLED.value[0]
        self._cancel(stream)
        self.stream_closed(stream, answered=False)
        self._strike("stream error")

    # -- flow control of requests -----------------------------------------------

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
            self.write(_frame(WINDOW_UPDATE, 0, 0, free.to_bytes(4, "big")))

    def grant(self, need: int) -> None:
        """Let the connection window take ``need`` more bytes of one incomplete message.

        Only while what is buffered stays under ``CONN_WINDOW`` plus one
        largest message; otherwise the message waits for other calls to take theirs.
        """
        short = need - self.recv_window
        if short > 0 and self.buffered + need <= CONN_WINDOW + self.server.max_receive:
            self.recv_window += short
            self.write(_frame(WINDOW_UPDATE, 0, 0, short.to_bytes(4, "big")))

    # -- calls -------------------------------------------------------------

    def _parse_call(self, headers: list[tuple[str, str]]) -> _CallHeaders | None:
        """What a request's fields say (None: malformed, RFC 9113 §8.1.1)."""
        method = ""
        metadata: list[tuple[str, str | bytes]] = []
        timeout: float | None = None
        error = ""
        for name, value in headers:
            if not name or not name.isascii() or name != name.lower() or not _valid_value(value):
                return None
            if name[0] == ":":
                if name == ":path":
                    method = value
            elif name == "grpc-timeout":
                timeout = parse_timeout(value)
                if timeout is None:
                    error = f"malformed grpc-timeout: {value!r}"
            elif name.endswith("-bin"):
                try:
                    raw = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
                except ValueError:
                    error = f"malformed binary metadata {value!r} in header {name!r}"
                else:
                    metadata.append((name, raw))
            elif name not in ("content-type", "te", "grpc-accept-encoding", "grpc-encoding"):
                metadata.append((name, value))
        return _CallHeaders(method, tuple(metadata), timeout, error)

    def _start_call(self, sid: int, flags: int, headers: list[tuple[str, str]]) -> None:
        # The decoder hands back the same list for a repeated block (a client's
        # next call of the same method): its reading is kept with it.
        if headers is not self.last_headers:
            fresh = self._parse_call(headers)
            if fresh is None:
                self._strike("malformed HEADERS")
                self.write(_frame(RST_STREAM, 0, sid, PROTOCOL_ERROR.to_bytes(4, "big")))
                return
            self.last_headers, self.last_parsed = headers, fresh
        parsed = self.last_parsed
        method, metadata, timeout, error = parsed
        stream = _Stream(self, sid, method)
        stream.metadata = metadata
        if timeout is not None:
            stream.deadline = time.monotonic() + timeout
        self.streams[sid] = stream
        self.idle.clear()
        if flags & END_STREAM:
            stream.ended = True
        if error:  # what grpc-go answers: the call fails, the connection goes on
            stream.finish(grpc.StatusCode.INTERNAL.value[0], error)
            return
        if not stream.ended and method in self.server.fast:
            # Wait for the request: the fast path may answer it without a task.
            stream.fast = self.server.fast[method]
            stream.timeout = timeout
            return
        self._spawn(stream, timeout)

    def _spawn(self, stream: _Stream, timeout: float | None) -> None:
        stream.task = self.loop.create_task(self.server.run_call(stream, timeout))
        self.spawned = True

    def _run_fast(self, stream: _Stream) -> None:
        """Answer a complete unary request through its method's fast path, or start the call."""
        fast, stream.fast = stream.fast, None
        assert fast is not None  # noqa: S101 - the caller checked
        answer: bytes | None = None
        if len(stream.messages) == 1 and not stream.buffer:
            try:
                answer = fast(stream.messages[0], stream.metadata)
            except Exception:  # the full path gives the error its proper status
                log.debug("fast path declined with an error", exc_info=True)
                answer = None
        if (
            answer is None
            or len(answer) > self.server.max_send
            or len(answer) + 5 > min(self.send_window, stream.send_window)
            or self.paused is not None
            or self.out_size + len(answer) > SEND_CHUNK
        ):
            self._spawn(stream, stream.timeout)
            return
        stream.drop()
        self.server.answered_fast(stream, answer)

    def stream_closed(self, stream: _Stream, *, answered: bool = True) -> None:
        if answered:
            self.strikes = 0  # a call answered: the client is doing work, not flooding
            self.strikes_since = self.idle_since
        if self.streams.get(stream.id) is stream:
            if not stream.ended:
                # The client may still be sending: tell it to stop.
                self.write(_frame(RST_STREAM, 0, stream.id, NO_ERROR.to_bytes(4, "big")))
            del self.streams[stream.id]
            if stream.held or stream.messages:
                stream.drop()
        self.window_waiters.discard(stream)
        self._check_idle()

    def _check_idle(self) -> None:
        if not self.streams:
            self.idle.set()
            self.idle_since = time.monotonic()
            if self.going_away and self.server.stopping and self.transport is not None:
                self.flush()
                self.transport.close()

    def _cancel(self, stream: _Stream) -> None:
        stream.cancelled = True
        stream._wake()
        _wake(stream.window_waiter)
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    def fail_stream(self, stream: _Stream, code: grpc.StatusCode, details: str) -> None:
        """End a call the server cannot go on with, and stop its handler."""
        stream.finish(code.value[0], details)
        stream.cancelled = True
        stream._wake()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue ``data``; what is queued in one loop iteration goes out in one write.

        A connection with at most one call in flight (a client making one call
        after another, as the Go ``ctr`` does) gains nothing by waiting for
        other calls' frames: its answer is written at once, with whatever
        control frames are queued before it.
        """
        self.out.append(data)
        self.out_size += len(data)
        if self.receiving:
            return
        if len(self.streams) <= 1:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def queue(self, data: bytes) -> None:
        """Queue ``data`` for the end of this loop iteration (a stream's messages).

        Messages of a stream leave together; the call's last frames (trailers,
        written with :meth:`write`) take them along at once.
        """
        self.out.append(data)
        self.out_size += len(data)
        if not self.flush_scheduled and not self.receiving:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued, in one ``write``."""
        self.flush_scheduled = False
        out = self.out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.out_size = 0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def headers_frames(self, sid: int, block: bytes, *, end_stream: bool) -> bytes:
        flags = END_STREAM if end_stream else 0
        limit = self.max_frame
        if len(block) <= limit:
            return _frame(HEADERS, flags | END_HEADERS, sid, block)
        parts = [_frame(HEADERS, flags, sid, block[:limit])]
        rest = block[limit:]
        while rest:
            chunk, rest = rest[:limit], rest[limit:]
            parts.append(_frame(CONTINUATION, 0 if rest else END_HEADERS, sid, chunk))
        return b"".join(parts)

    async def send_data(self, stream: _Stream, payload: bytes) -> None:
        """Send ``payload`` as DATA frames within the peer's windows and the back-pressure.

        At most ``SEND_CHUNK`` bytes are queued at a time (then the transport's
        back-pressure is checked again).
        """
        view = memoryview(payload)
        while view:
            if stream.closed or self.transport is None or self.transport.is_closing():
                raise _Reset
            if self.out_size >= SEND_CHUNK:
                self.flush()  # the transport learns the size, and may push back
            if self.paused is not None:
                await self.paused
                continue
            allowed = min(self.send_window, stream.send_window, len(view), SEND_CHUNK)
            if allowed <= 0:
                stream.window_waiter = self.loop.create_future()
                self.window_waiters.add(stream)
                try:
                    await stream.window_waiter
                finally:
                    self.window_waiters.discard(stream)
                    stream.window_waiter = None
                continue
            frames = []
            limit = self.max_frame
            sent = 0
            while sent < allowed:
                n = min(limit, allowed - sent)
                frames.append(_frame(DATA, 0, stream.id, bytes(view[sent : sent + n])))
                sent += n
            self.send_window -= allowed
            stream.send_window -= allowed
            view = view[allowed:]
            self.queue(b"".join(frames))
            if view:
                self.flush()  # let the transport see the size, and push back

    def _abort_connection(self, code: int, reason: str) -> None:
        log.debug("closing HTTP/2 connection", extra={"fields": {"reason": reason}})
        self.write(_goaway(self.last_stream, code, reason.encode()))
        self.flush()
        if self.transport is not None:
            self.transport.close()
        for stream in list(self.streams.values()):
            self._cancel(stream)

    def go_away(self) -> None:
        """Refuse new streams; in-flight ones may finish."""
        self.going_away = True
        self.write(_goaway(self.last_stream, NO_ERROR, b""))
        self._check_idle()


def _goaway(last_stream: int, code: int, debug: bytes) -> bytes:
    return _frame(GOAWAY, 0, 0, struct.pack(">II", last_stream, code) + debug)


_BAD_IN_VALUE: Final = frozenset("\x00\r\n")


def _valid_value(value: str) -> bool:
    """Whether a field value is well-formed: UTF-8 (no escaped bytes), no NUL, CR or LF."""
    if value.isascii():
        return not ("\x00" in value or "\r" in value or "\n" in value)
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return _BAD_IN_VALUE.isdisjoint(value)


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class Server:
    """A gRPC server for unix sockets with grpc.aio's registration surface.

    Args:
        interceptors: ``grpc.aio.ServerInterceptor`` objects, applied per call
            in order (the first is the outermost).
        observer: told when each call starts and ends (the daemon's metrics);
            cheaper than an interceptor that wraps every handler.
        max_receive_message_length: the largest request message accepted.
        max_send_message_length: the largest response message sent.
        limits: what one client may hold (:class:`Limits`).
    """

    def __init__(
        self,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        observer: CallObserver | None = None,
        max_receive_message_length: int = 16 << 20,
        max_send_message_length: int = 16 << 20,
        limits: Limits | None = None,
    ) -> None:
        self.interceptors = tuple(interceptors)
        self.limits = limits or Limits()
        self.observer = observer
        self._kinds: dict[str, str] = {}
        self.fast: dict[str, FastPath] = {}
        self.max_receive = max_receive_message_length
        self.max_send = max_send_message_length
        self.methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self.generic: list[grpc.GenericRpcHandler] = []
        self.connections: set[_Connection] = set()
        self.servers: list[asyncio.Server] = []
        self.stopping = False

    # -- registration (what generated add_*Servicer_to_server calls) ---------

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in method_handlers.items():
            self.methods[f"/{service_name}/{name}"] = handler

    def add_fast_path(self, method: str, fast: FastPath) -> None:
        """Let ``fast`` answer unary calls of ``method`` (``/package.Service/Method``).

        ``fast(request_bytes, metadata)`` runs on the event loop as soon as the
        request is complete, before any task exists; it returns the serialized
        response, or None to let the registered handler serve the call as
        usual (errors included: the fast path only answers what it can answer
        without waiting). Interceptors do not see fast answers, so the server
        ignores fast paths when it has interceptors; the observer does.
        """
        if not self.interceptors:
            self.fast[method] = fast

    def answered_fast(self, stream: _Stream, answer: bytes) -> None:
        """Send a fast path's answer with the OK status, and tell the observer."""
        observer = self.observer
        if observer is not None:
            handler = self.methods.get(stream.method)
            kind = self._kinds.get(stream.method) or (
                self._kind(stream.method, handler) if handler is not None else "unary"
            )
            observer.started(stream.method, kind)
            stream.finish(grpc.StatusCode.OK.value[0], "", b"", answer)
            observer.handled(stream.method, kind, "OK", 0.0)
            return
        stream.finish(grpc.StatusCode.OK.value[0], "", b"", answer)

    # -- listening -------------------------------------------------------------

    async def listen_unix(self, path: str) -> None:
        """Serve on the unix socket ``path`` (the caller prepares and secures it)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_unix_server(
            lambda: _Connection(self), path, backlog=1024, start_serving=True
        )
        self.servers.append(server)

    async def stop(self, grace: float | None) -> None:
        """Stop accepting, let in-flight calls run up to ``grace`` seconds, then cancel them."""
        self.stopping = True
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn.go_away()
        if grace:
            waits = [conn.idle.wait() for conn in self.connections]
            if waits:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.gather(*waits), grace)
        for conn in list(self.connections):
            for stream in list(conn.streams.values()):
                conn._cancel(stream)
            conn.flush()
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        await asyncio.sleep(0)

    # -- calls -------------------------------------------------------------------

    async def _resolve(self, details: _CallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self.methods.get(details.method)
        if handler is None:
            for generic in self.generic:
                handler = generic.service(details)  # type: ignore[arg-type]
                if handler is not None:
                    break
        return handler

    async def _lookup(self, stream: _Stream) -> grpc.RpcMethodHandler[Any, Any] | None:
        if not self.interceptors:
            handler = self.methods.get(stream.method)
            if handler is not None:
                return handler
        details = _CallDetails(stream.method, stream.metadata)
        if not self.interceptors:
            return await self._resolve(details)

        async def call(index: int, d: Any) -> Any:
            if index == len(self.interceptors):
                return await self._resolve(d)
            return await self.interceptors[index].intercept_service(
                lambda nd: call(index + 1, nd), d
            )

        return await call(0, details)  # type: ignore[no-any-return]

    async def run_call(self, stream: _Stream, seconds: float | None) -> None:
        """Run one call to its end (``seconds``: its deadline); never raises."""
        handle = None
        if seconds is not None:
            handle = stream.conn.loop.call_later(seconds, self._expire, stream)
        context: ServicerContext | None = None
        kind = ""
        started = 0.0
        try:
            handler = await self._lookup(stream)
            if handler is None:
                self._unimplemented(stream)
                return
            if self.observer is not None:
                kind = self._kinds.get(stream.method) or self._kind(stream.method, handler)
                self.observer.started(stream.method, kind)
                started = time.perf_counter()
            context = ServicerContext(stream, handler.response_serializer)
            stream.context = context
            stream.deserializer = handler.request_deserializer or _identity
            await self._dispatch(stream, handler, context)
        except asyncio.CancelledError:
            if context is not None and context.code() is None:
                context.set_code(grpc.StatusCode.CANCELLED)
            if not stream.closed:
                stream.finish(grpc.StatusCode.CANCELLED.value[0], "context canceled")
        except _Reset:
            pass
        except Exception:
            log.exception("h2grpc: internal error serving %s", stream.method)
            if not stream.closed:
                stream.finish(grpc.StatusCode.INTERNAL.value[0], "internal server error")
        finally:
            if handle is not None:
                handle.cancel()
            if context is not None:
                self._end(context, stream, kind, started)

    def _end(self, context: ServicerContext, stream: _Stream, kind: str, started: float) -> None:
        context._run_callbacks()
        if self.observer is not None:
            code = _STATUS_NAMES.get(stream.code, grpc.StatusCode.CANCELLED)
            self.observer.handled(stream.method, kind, code.name, time.perf_counter() - started)

    def _kind(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> str:
        kind = rpc_type(handler)
        self._kinds[method] = kind
        return kind

    def _unimplemented(self, stream: _Stream) -> None:
        service, _, name = stream.method[1:].rpartition("/")
        if any(m.startswith(f"/{service}/") for m in self.methods):
            text = f"unknown method {name} for service {service}"
        else:
            text = f"unknown service {service}"
        stream.finish(grpc.StatusCode.UNIMPLEMENTED.value[0], text)

    def _expire(self, stream: _Stream) -> None:
        if stream.closed:
            return
        if stream.context is not None:
            stream.context.set_code(grpc.StatusCode.DEADLINE_EXCEEDED)
        stream.finish(grpc.StatusCode.DEADLINE_EXCEEDED.value[0], "context deadline exceeded")
        stream.cancelled = True
        stream._wake()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()

    @staticmethod
    async def _request(stream: _Stream, handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
        """The handler's request: the message of a unary call, an iterator for a stream."""
        if handler.request_streaming:
            return stream.requests()
        raw = await stream.next_raw()
        if raw is None:
            raise _CallError(grpc.StatusCode.INTERNAL, "grpc: no request message received")
        if not stream.ended and await stream.next_raw() is not None:
            raise _CallError(
                grpc.StatusCode.INTERNAL, "grpc: too many request messages for a unary method"
            )
        return stream.decode(raw)

    @staticmethod
    async def _stream_out(
        stream: _Stream,
        handler: grpc.RpcMethodHandler[Any, Any],
        request: Any,
        context: ServicerContext,
    ) -> Any:
        """Run a server-streaming behaviour: an async generator, or a coroutine that writes.

        A coroutine may return its stream's last message instead of writing it
        (None: no more messages); the server sends it with the status, in one
        write. grpcio ignores such a return value, so only behaviours meant
        for this server use it (the Content service's ``Read``).
        """
        serializer = handler.response_serializer or _identity
        behavior: Any = handler.unary_stream or handler.stream_stream
        result = behavior(request, context)
        if hasattr(result, "__anext__"):
            async for item in result:
                await stream.send_message(item if isinstance(item, bytes) else serializer(item))
            return None
        if result is not None:
            return await result
        return None

    async def _dispatch(
        self,
        stream: _Stream,
        handler: grpc.RpcMethodHandler[Any, Any],
        context: ServicerContext,
    ) -> None:
        response: Any = None
        try:
            request = await self._request(stream, handler)
            if handler.response_streaming:
                response = await self._stream_out(stream, handler, request, context)
            else:
                behavior: Any = handler.unary_unary or handler.stream_unary
                response = await behavior(request, context)
        except grpc.aio.AbortError:
            self._finish_status(stream, context, grpc.StatusCode.UNKNOWN)
            return
        except _CallError as exc:
            context.set_code(exc.code)
            stream.finish(exc.code.value[0], exc.details)
            return
        except (asyncio.CancelledError, _Reset):
            raise
        except Exception as exc:
            code = context.code()
            if code is None or code is grpc.StatusCode.OK:
                log.error("unexpected error in gRPC handler %s", stream.method, exc_info=exc)
                context.set_code(grpc.StatusCode.UNKNOWN)
                stream.finish(grpc.StatusCode.UNKNOWN.value[0], f"Unexpected {type(exc)}: {exc}")
            else:
                self._finish_status(stream, context, code)
            return
        code = context.code()
        if code is not None and code is not grpc.StatusCode.OK:
            self._finish_status(stream, context, code)
        elif handler.response_streaming and response is None:
            stream.finish(grpc.StatusCode.OK.value[0], "", self._trailing(context))
        else:
            await self._finish_unary(stream, handler, context, response)

    def _finish_status(
        self, stream: _Stream, context: ServicerContext, default: grpc.StatusCode
    ) -> None:
        code = context.code() or default
        stream.finish(code.value[0], context.details(), self._trailing(context))

    async def _finish_unary(
        self,
        stream: _Stream,
        handler: grpc.RpcMethodHandler[Any, Any],
        context: ServicerContext,
        response: Any,
    ) -> None:
        """Send the last response message and the OK status, in one write when the windows allow."""
        if response is None:
            context.set_code(grpc.StatusCode.INTERNAL)
            stream.finish(grpc.StatusCode.INTERNAL.value[0], "handler returned no response")
            return
        serializer = handler.response_serializer or _identity
        last: bytes | None = response if isinstance(response, bytes) else serializer(response)
        assert last is not None  # noqa: S101 - serializers return bytes
        if len(last) > self.max_send:
            text = f"grpc: trying to send message larger than max ({len(last)} vs. {self.max_send})"
            context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
            stream.finish(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], text)
            return
        conn = stream.conn
        if (
            conn.paused is not None
            or conn.out_size + len(last) > SEND_CHUNK
            or len(last) + 5 > min(conn.send_window, stream.send_window)
        ):
            await stream.send_message(last)
            last = None
        stream.finish(grpc.StatusCode.OK.value[0], "", self._trailing(context), last)

    @staticmethod
    def _trailing(context: ServicerContext) -> bytes:
        md = context.trailing_metadata()
        return _metadata_block(md) if md else b""


RPC_TYPE_ATTR: Final = "grpc_rpc_type"
"""Attribute a handler's behaviour may carry to name its wire type for the metrics.

A server-streaming method may be served by a unary-unary handler that writes
its leading messages with ``context.write`` and returns the last one; such a
behaviour sets this attribute to ``"server_stream"`` so the method's
``grpc_type`` metrics label stays the proto's.
"""


def rpc_type(handler: grpc.RpcMethodHandler[Any, Any]) -> str:
    """``unary``, ``client_stream``, ``server_stream`` or ``bidi_stream`` (the metrics label)."""
    for attr in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        declared = getattr(getattr(handler, attr, None), RPC_TYPE_ATTR, None)
        if isinstance(declared, str):
            return declared
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


FastPath: TypeAlias = "Callable[[bytes, tuple[tuple[str, str | bytes], ...]], bytes | None]"
"""A method's fast path: (request bytes, metadata) -> serialized response, or None."""


class CallObserver(Protocol):
    """What :class:`Server` tells about every call (``GrpcMetrics`` has this shape)."""

    def started(self, full_method: str, rpc_type: str) -> None: ...

    def handled(self, full_method: str, rpc_type: str, code: str, seconds: float) -> None: ...


def _identity(data: Any) -> Any:
    return data


def enabled() -> bool:
    """Whether the daemon serves its unix socket with this server (the default).

    ``PYCONTAINERD_GRPC_SERVER=grpcio`` selects grpcio's server instead, for
    comparison and as a way back if a client misbehaves with this one.
    """
    return os.environ.get("PYCONTAINERD_GRPC_SERVER", "h2") != "grpcio"
