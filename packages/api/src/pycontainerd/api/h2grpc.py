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
  ``await context.write(...)``, request iterators for client streams; a server
  stream's generator marked with
  :func:`~pycontainerd.api.grpcutil.last_message_with_status` has its last
  message sent with the status;
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
and a flood ends in GOAWAY ENHANCE_YOUR_CALM. The api README has the table.

Modules: the HTTP/2 connection without I/O (framing, windows, stream states,
the RFC checks and limits) is :mod:`pycontainerd.api.h2conn`, HPACK is
:mod:`pycontainerd.api.h2hpack`, the handler context is
:mod:`pycontainerd.api.h2context`; this module is the server: the asyncio
protocol around the connection, and the calls.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, TypeAlias, cast

import grpc
import grpc.aio

from pycontainerd.api.grpcutil import LAST_WITH_STATUS_ATTR
from pycontainerd.api.h2conn import (
    ACK,
    CANCEL,
    COMPRESSION_ERROR,
    CONN_WINDOW,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOOD_STRIKES,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADERS,
    INTERNAL_ERROR,
    MAX_FRAME_ACCEPTED,
    MAX_FRAME_SIZE,
    MAX_HEADER_LIST,
    MAX_WINDOW,
    MIN_DATA_CHUNK,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SEND_CHUNK,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_HEADER_TABLE_SIZE,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    STREAM_CLOSED,
    STREAM_WINDOW,
    WINDOW_UPDATE,
    H2Connection,
    H2ConnectionError,
    H2Stream,
    Limits,
)
from pycontainerd.api.h2conn import (
    frame as _frame,
)
from pycontainerd.api.h2conn import (
    goaway as _goaway,
)
from pycontainerd.api.h2context import (
    ServicerContext,
    _CallError,
    _metadata_block,
    _Reset,
    _trailers_block,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

__all__ = [  # noqa: RUF022 - the API, then the HTTP/2 names of h2conn kept importable from here
    "CallObserver",
    "FastPath",
    "Limits",
    "Server",
    "ServicerContext",
    "rpc_type",
    "PREFACE",
    "DATA",
    "HEADERS",
    "PRIORITY",
    "RST_STREAM",
    "SETTINGS",
    "PUSH_PROMISE",
    "PING",
    "GOAWAY",
    "WINDOW_UPDATE",
    "CONTINUATION",
    "END_STREAM",
    "ACK",
    "END_HEADERS",
    "PADDED",
    "PRIORITY_FLAG",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "ENHANCE_YOUR_CALM",
    "SETTINGS_HEADER_TABLE_SIZE",
    "SETTINGS_ENABLE_PUSH",
    "SETTINGS_MAX_CONCURRENT_STREAMS",
    "SETTINGS_INITIAL_WINDOW_SIZE",
    "SETTINGS_MAX_FRAME_SIZE",
    "SETTINGS_MAX_HEADER_LIST_SIZE",
    "DEFAULT_WINDOW",
    "MAX_WINDOW",
    "DEFAULT_FRAME",
    "MAX_FRAME_SIZE",
    "MAX_FRAME_ACCEPTED",
    "STREAM_WINDOW",
    "CONN_WINDOW",
    "MAX_HEADER_LIST",
    "FLOOD_STRIKES",
    "MIN_DATA_CHUNK",
    "SEND_CHUNK",
]

log = logging.getLogger("pycontainerd.api.h2grpc")

_STATUS_NAMES: Final = {sc.value[0]: sc for sc in grpc.StatusCode}

# HPACK blocks this server sends: no dynamic table (clients' decoders never
# have to track ours), literals without indexing.
_RESPONSE_HEADERS: Final = (
    b"\x88"  # :status 200 (static index 8)
    + b"\x0f\x10\x10application/grpc"  # content-type (static name 31), literal value
)


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


class _CallDetails(NamedTuple):
    """What a generic handler or an interceptor sees of a call (``grpc.HandlerCallDetails``)."""

    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...]


#: A request message of at least this size that fills its stream's buffer is
#: handed on as a view of that buffer (which the stream then replaces), not copied.
HANDOVER: Final = 64 * 1024


class _Stream(H2Stream):
    """One HTTP/2 stream: one call.

    ``__init__`` sets :class:`H2Stream`'s fields itself (no ``super()`` call on
    the path of every call).
    """

    __slots__ = (
        "buffer",
        "cancelled",
        "conn",
        "context",
        "deadline",
        "deserializer",
        "fast",
        "headers_sent",
        "messages",
        "metadata",
        "method",
        "task",
        "timeout",
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
        # a large message is a view of the buffer it arrived in (see ``HANDOVER``)
        self.messages: collections.deque[bytes | memoryview] = collections.deque()
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

    def on_data(self, data: bytes | memoryview) -> None:
        """Take a DATA payload (a view, valid during the call only) and split off whole messages."""
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
            if length >= HANDOVER and len(buf) == 5 + length:
                # the buffer holds just this message: handed over, not copied
                self.messages.append(memoryview(buf)[5:])
                self.buffer = buf = bytearray()
                break
            with memoryview(buf) as view:
                self.messages.append(bytes(view[5 : 5 + length]))
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

    async def next_raw(self) -> bytes | memoryview | None:
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

    def decode(self, data: bytes | memoryview) -> Any:
        """A request message; bytes that do not parse end the call with INTERNAL (as grpc-go)."""
        deserialize = self.deserializer or _identity
        if deserialize is _identity:
            return bytes(data)  # a method without a deserializer takes bytes, not a view
        try:
            return deserialize(cast("bytes", data))  # protobuf's FromString takes any buffer
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


class _CallHeaders(NamedTuple):
    """What a request's header fields say."""

    method: str
    metadata: tuple[tuple[str, str | bytes], ...]
    timeout: float | None
    error: str  # a malformed gRPC field (the call ends INTERNAL); empty if none


_NO_CALL: Final = _CallHeaders("", (), None, "")


class _Connection(H2Connection, asyncio.Protocol):
    """One client connection: the asyncio side of :class:`H2Connection` and the calls."""

    def __init__(self, server: Server) -> None:
        super().__init__(server.limits, server.max_receive)
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, _Stream] = {}  # type: ignore[assignment]
        self.window_waiters: set[_Stream] = set()  # type: ignore[assignment]
        self.paused: asyncio.Future[None] | None = None
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
        self.transport.write(self.preamble())
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
        if self.buf and len(self.buf) + len(data) < self.need:
            self.buf += data  # a frame dribbled in: nothing to parse yet
            return
        self.receiving = True
        self.spawned = False
        try:
            self._feed(data)
        except H2ConnectionError as exc:
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

    # -- H2Connection's hooks ------------------------------------------------

    def _closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _refusing(self) -> bool:
        return self.going_away or self.server.stopping

    def _stream_data(self, stream: H2Stream, data: bytes | memoryview) -> None:
        cast("_Stream", stream).on_data(data)

    def _stream_end(self, stream: H2Stream) -> None:
        s = cast("_Stream", stream)
        s.on_end()
        if s.fast is not None and not s.closed:
            self._run_fast(s)

    def _stream_reset(self, stream: H2Stream) -> None:
        s = cast("_Stream", stream)
        self._cancel(s)
        s.drop()
        self.window_waiters.discard(s)
        if s.task is not None and not s.task.done():
            # Its handler still runs: the slot stays taken until it ends.
            self.orphans += 1
            s.task.add_done_callback(self._orphan_done)
        self._check_idle()

    def _stream_aborted(self, stream: H2Stream, code: int) -> None:
        log.debug(
            "resetting an HTTP/2 stream", extra={"fields": {"stream": stream.id, "code": code}}
        )
        s = cast("_Stream", stream)
        self._cancel(s)
        self.stream_closed(s, answered=False)

    def _window_opened(self, stream: H2Stream | None) -> None:
        if stream is None:
            self._wake_writers()
        else:
            _wake(cast("_Stream", stream).window_waiter)

    def _orphan_done(self, task: asyncio.Task[None]) -> None:
        self.orphans -= 1
        self._check_idle()

    def _wake_writers(self) -> None:
        for stream in self.window_waiters:
            _wake(stream.window_waiter)

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
                answer = fast(bytes(stream.messages[0]), stream.metadata)
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

        For a generator marked with :func:`~.grpcutil.last_message_with_status`, the
        message it yields last is returned, not sent (None: it yielded none);
        :meth:`_dispatch` sends it with the status, in one write.
        """
        serializer = handler.response_serializer or _identity
        behavior: Any = handler.unary_stream or handler.stream_stream
        result = behavior(request, context)
        if not hasattr(result, "__anext__"):
            if result is not None:
                await result
            return None
        if not getattr(behavior, LAST_WITH_STATUS_ATTR, False):
            async for item in result:
                await stream.send_message(item if isinstance(item, bytes) else serializer(item))
            return None
        held: bytes | None = None  # one message behind the generator
        try:
            async for item in result:
                if held is not None:
                    await stream.send_message(held)
                held = item if isinstance(item, bytes) else serializer(item)
        except Exception:
            if held is not None:  # what the generator yielded still goes out before the error
                await stream.send_message(held)
            raise
        return held

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
