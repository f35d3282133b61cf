"""The streaming server: HTTP/1.1 on one address, upgraded to SPDY/3.1 or WebSocket.

URLs are ``/exec/<token>``, ``/attach/<token>`` and ``/portforward/<token>``;
tokens come from :meth:`StreamingServer.register` and work once, for
:data:`~pycontainerd.cri.streaming.tokens.DEFAULT_TTL` seconds. A request
with ``Upgrade: websocket`` gets a WebSocket, ``Upgrade: SPDY/3.1`` gets SPDY;
the subprotocol is the first one the client lists that the server knows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import struct
from typing import TYPE_CHECKING

from pycontainerd.cri.streaming import remotecommand as rc
from pycontainerd.cri.streaming import spdy, websocket
from pycontainerd.cri.streaming.http import (
    MAX_HEAD,
    BadRequestError,
    Request,
    parse_request,
    response,
)
from pycontainerd.cri.streaming.session import (
    CommandStreams,
    InputStream,
    OutputStream,
    PortStream,
    StreamingHandler,
    StreamRequest,
)
from pycontainerd.cri.streaming.tokens import DEFAULT_TTL, TokenStore

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Coroutine

log = logging.getLogger(__name__)

STREAM_CREATION_TIMEOUT = 30.0  # upstream's default
HEAD_TIMEOUT = 30.0  # a client has this long to send its request head
IDLE_TIMEOUT = 4 * 3600.0  # containerd's stream_idle_timeout default, "4h0m0s"
READ_CHUNK = 64 * 1024
SPDY_MAX_DATA = 32 * 1024
CLOSE_WAIT = 1.0


class StreamingServer:
    """The streaming server of the CRI plugin.

    Args:
        handler: runs the sessions.
        host, port: where to listen (port 0: a random free port, as containerd).
        ssl_context: serve HTTPS (``enable_tls_streaming``).
        token_ttl: how long a URL stays usable.
    """

    def __init__(
        self,
        handler: StreamingHandler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ssl_context: ssl.SSLContext | None = None,
        token_ttl: float = DEFAULT_TTL,
        stream_creation_timeout: float = STREAM_CREATION_TIMEOUT,
        idle_timeout: float | None = IDLE_TIMEOUT,
        max_message: int = websocket.DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.tokens: TokenStore[StreamRequest] = TokenStore(token_ttl)
        self.stream_creation_timeout = stream_creation_timeout
        self.idle_timeout = idle_timeout
        self.max_message = max_message
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def active_connections(self) -> int:
        """Connections being served (a test can await this reaching 0)."""
        return len(self._tasks)

    def _forget(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once no connection is being served."""
        await self._idle.wait()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self.ssl_context, limit=READ_CHUNK
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and end every connection (handlers are cancelled)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def register(self, request: StreamRequest) -> str:
        """Store ``request`` under a new one-time token; return its URL."""
        token = self.tokens.insert(request)
        return f"{self.base_url}/{request.kind}/{token}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - start_server runs callbacks in tasks
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._forget)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("streaming connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HEAD_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return
        except asyncio.LimitOverrunError:
            writer.write(response(431, body="request head too large"))
            return
        if len(head) > MAX_HEAD:
            writer.write(response(431, body="request head too large"))
            return
        try:
            req = parse_request(head)
        except BadRequestError as e:
            writer.write(response(400, body=str(e)))
            return
        parts = req.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in ("exec", "attach", "portforward"):
            writer.write(response(404, body="404 page not found"))
            return
        sreq = self.tokens.consume(parts[1])
        if sreq is None or sreq.kind != parts[0]:
            writer.write(response(404, body="404 page not found"))
            return
        upgrade = (req.header("upgrade") or "").lower()
        if upgrade == "websocket":
            await self._serve_websocket(req, sreq, reader, writer)
        elif upgrade.startswith("spdy/"):
            await self._serve_spdy(req, sreq, reader, writer)
        else:
            writer.write(
                response(400, body="unable to upgrade: missing upgrade headers in request")
            )

    # -- SPDY ---------------------------------------------------------------------------

    async def _serve_spdy(
        self,
        req: Request,
        sreq: StreamRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if req.header("upgrade") != "SPDY/3.1" or "upgrade" not in [
            t.lower() for t in req.tokens("connection")
        ]:
            writer.write(
                response(
                    400, body="unable to upgrade: only SPDY/3.1 with Connection: Upgrade is served"
                )
            )
            return
        supported = rc.SPDY_PORTFORWARD if sreq.kind == "portforward" else rc.SPDY_REMOTECOMMAND
        offered = req.tokens("x-stream-protocol-version")
        if offered:
            refusal = (
                "unable to upgrade: unable to negotiate protocol: "
                f"client supports {offered}, server accepts {list(supported)}"
            )
            header = "X-Accepted-Stream-Protocol-Versions"
            chosen = _negotiate(writer, offered, supported, header, refusal)
            if chosen is None:
                return
        else:
            chosen = rc.SPDY_V1 if sreq.kind != "portforward" else rc.SPDY_PORTFORWARD[0]
        headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
        if offered:
            headers.append(("X-Stream-Protocol-Version", chosen))
        writer.write(response(101, headers))
        conn = SpdyConnection(reader, writer, self.idle_timeout)
        conn.start()
        try:
            if sreq.kind == "portforward":
                await self._spdy_portforward(conn, sreq)
            else:
                await self._spdy_command(conn, sreq, chosen)
        finally:
            await conn.shutdown()

    async def _spdy_command(self, conn: SpdyConnection, sreq: StreamRequest, protocol: str) -> None:
        expected = {rc.STREAM_ERROR}
        if sreq.stdin:
            expected.add(rc.STREAM_STDIN)
        if sreq.stdout:
            expected.add(rc.STREAM_STDOUT)
        if sreq.stderr and not sreq.tty:
            expected.add(rc.STREAM_STDERR)
        if sreq.tty and protocol in (rc.SPDY_V4, rc.SPDY_V3):
            expected.add(rc.STREAM_RESIZE)
        got: dict[str, SpdyStream] = {}
        try:
            async with asyncio.timeout(self.stream_creation_timeout):
                while not expected <= got.keys():
                    stream = await conn.accept_stream()
                    if stream is None:
                        return
                    kind = stream.header(rc.STREAM_TYPE_HEADER)
                    if kind not in expected or kind in got:
                        conn.reset(stream.id, spdy.RST_PROTOCOL_ERROR)
                        continue
                    got[kind] = stream
        except TimeoutError:
            log.info("streaming: client did not create %s in time", sorted(expected - got.keys()))
            return
        streams = CommandStreams(protocol)
        if rc.STREAM_STDIN in got:
            streams.stdin = got[rc.STREAM_STDIN].input
        if rc.STREAM_STDOUT in got:
            streams.stdout = got[rc.STREAM_STDOUT].output
        if rc.STREAM_STDERR in got:
            streams.stderr = got[rc.STREAM_STDERR].output
        aux: list[Coroutine[object, object, None]] = []
        if rc.STREAM_RESIZE in got:
            streams.resize_queue = asyncio.Queue()
            aux.append(_pump_resizes(got[rc.STREAM_RESIZE].input, streams.resize_queue))
        await self._run_command(
            sreq,
            streams=streams,
            error=got[rc.STREAM_ERROR].output,
            protocol=protocol,
            closed=conn.closed,
            aux=aux,
        )

    async def _spdy_portforward(self, conn: SpdyConnection, sreq: StreamRequest) -> None:
        pairs: dict[str, dict[str, SpdyStream]] = {}
        forwards: set[asyncio.Task[None]] = set()
        try:
            while (stream := await conn.accept_stream()) is not None:
                kind = stream.header(rc.STREAM_TYPE_HEADER)
                rid = stream.header(rc.REQUEST_ID_HEADER) or ""
                port_text = stream.header(rc.PORT_HEADER) or ""
                if kind not in (rc.STREAM_DATA, rc.STREAM_ERROR) or not port_text.isdigit():
                    conn.reset(stream.id, spdy.RST_PROTOCOL_ERROR)
                    continue
                pair = pairs.setdefault(rid, {})
                if kind in pair:
                    conn.reset(stream.id, spdy.RST_PROTOCOL_ERROR)
                    continue
                pair[kind] = stream
                if len(pair) == 2:
                    del pairs[rid]
                    port = int(port_text)
                    task = asyncio.create_task(
                        self._forward(
                            sreq,
                            port,
                            pair[rc.STREAM_DATA].input,
                            pair[rc.STREAM_DATA].output,
                            pair[rc.STREAM_ERROR].output,
                        )
                    )
                    forwards.add(task)
                    task.add_done_callback(forwards.discard)
        finally:
            # The client went away (or the server closes): every forward ends with it.
            await _cancel_all(forwards)

    async def _forward(
        self,
        sreq: StreamRequest,
        port: int,
        data_in: InputStream,
        data_out: OutputStream,
        err: OutputStream,
    ) -> None:
        try:
            if sreq.ports and port not in sreq.ports:
                msg = f"port {port} is not among the forwarded ports {list(sreq.ports)}"
                raise PermissionError(msg)
            await self.handler.port_forward(sreq, PortStream(port, data_in, data_out))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            with contextlib.suppress(BrokenPipeError, ConnectionError):
                await err.write(f"error forwarding port {port}: {e}".encode())
        with contextlib.suppress(BrokenPipeError, ConnectionError):
            await data_out.close()
            await err.close()

    # -- shared -------------------------------------------------------------------------

    async def _run_command(
        self,
        sreq: StreamRequest,
        *,
        streams: CommandStreams,
        error: OutputStream,
        protocol: str,
        closed: asyncio.Event,
        aux: list[Coroutine[object, object, None]],
    ) -> None:
        """Run the handler until it returns or the connection goes; report the exit status."""
        call = self.handler.exec if sreq.kind == "exec" else self.handler.attach
        aux_tasks = [asyncio.ensure_future(c) for c in aux]
        work = asyncio.ensure_future(call(sreq, streams))
        gone = asyncio.ensure_future(closed.wait())
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            for t in aux_tasks:
                t.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work
        if work.cancelled():
            return
        code: int | None = None
        failure: str | None = None
        exc = work.exception()
        if exc is not None:
            failure = str(exc) or type(exc).__name__
        else:
            code = work.result()
        with contextlib.suppress(BrokenPipeError, ConnectionError):
            for out in (streams.stdout, streams.stderr):
                if out is not None:
                    await out.close()
            msg = rc.exit_status_message(protocol, code, failure)
            if msg:
                await error.write(msg)
            await error.close()

    # -- WebSocket ----------------------------------------------------------------------

    async def _serve_websocket(
        self,
        req: Request,
        sreq: StreamRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        key = req.header("sec-websocket-key") or ""
        if (
            req.method != "GET"
            or req.header("sec-websocket-version") != "13"
            or "upgrade" not in [t.lower() for t in req.tokens("connection")]
            or not websocket.valid_key(key)
        ):
            writer.write(
                response(
                    400,
                    [("Sec-WebSocket-Version", "13")],
                    "not a WebSocket handshake (RFC 6455 version 13)",
                )
            )
            return
        supported = rc.WS_PORTFORWARD if sreq.kind == "portforward" else rc.WS_REMOTECOMMAND
        offered = req.tokens("sec-websocket-protocol")
        refusal = f"requested protocol(s) are not supported: {offered}; supports {list(supported)}"
        chosen = _negotiate(writer, offered, supported, "Sec-WebSocket-Protocol", refusal)
        if chosen is None:
            return
        writer.write(
            response(
                101,
                [
                    ("Upgrade", "websocket"),
                    ("Connection", "Upgrade"),
                    ("Sec-WebSocket-Accept", websocket.accept_key(key)),
                    ("Sec-WebSocket-Protocol", chosen),
                ],
            )
        )
        conn = WsConnection(reader, writer, chosen, self.max_message, self.idle_timeout)
        conn.start()
        try:
            if sreq.kind == "portforward":
                await self._ws_portforward(conn, sreq, req)
            else:
                await self._ws_command(conn, sreq, chosen)
        finally:
            await conn.shutdown()

    async def _ws_command(self, conn: WsConnection, sreq: StreamRequest, protocol: str) -> None:
        streams = CommandStreams(protocol)
        aux: list[Coroutine[object, object, None]] = []
        if sreq.stdin:
            streams.stdin = conn.input(rc.STDIN)
        if sreq.stdout:
            streams.stdout = conn.output(rc.STDOUT)
        if sreq.stderr and not sreq.tty:
            streams.stderr = conn.output(rc.STDERR)
        if sreq.tty:
            streams.resize_queue = asyncio.Queue()
            aux.append(_pump_resizes(conn.input(rc.RESIZE), streams.resize_queue))
        error = conn.output(rc.ERROR)
        # The lowest writable channel gets an empty message: "streams are ready".
        first = rc.STDOUT if sreq.stdout else rc.STDERR if sreq.stderr else rc.ERROR
        await conn.send_channel(first, b"")
        await self._run_command(
            sreq, streams=streams, error=error, protocol=protocol, closed=conn.closed, aux=aux
        )

    async def _ws_portforward(self, conn: WsConnection, sreq: StreamRequest, req: Request) -> None:
        ports: list[int] = []
        for text in req.query.get("port", []) + req.query.get("ports", []):
            for item in text.split(","):
                if not item.strip().isdigit() or not 0 < int(item) < 65536:
                    await conn.close(websocket.CLOSE_PROTOCOL_ERROR, f"invalid port {item!r}")
                    return
                ports.append(int(item))
        if not ports:
            ports = list(sreq.ports)
        if not ports:
            await conn.close(websocket.CLOSE_PROTOCOL_ERROR, 'query parameter "port" is required')
            return
        forwards: set[asyncio.Task[None]] = set()
        try:
            for i, port in enumerate(ports):
                prefix = struct.pack("<H", port)
                await conn.send_channel(2 * i, prefix)
                await conn.send_channel(2 * i + 1, prefix)
                forwards.add(
                    asyncio.create_task(
                        self._forward(
                            sreq,
                            port,
                            conn.input(2 * i),
                            conn.output(2 * i),
                            conn.output(2 * i + 1),
                        )
                    )
                )
            await conn.closed.wait()
        finally:
            await _cancel_all(forwards)


async def _cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def _pump_resizes(source: InputStream, queue: asyncio.Queue[rc.TerminalSize | None]) -> None:
    decoder = rc.ResizeDecoder()
    try:
        while chunk := await source.read():
            for size in decoder.feed(chunk):
                queue.put_nowait(size)
    except ValueError:
        log.info("streaming: resize stream is not JSON; ignoring it")
    finally:
        queue.put_nowait(None)


class IdleWatch:
    """Calls ``on_idle`` once nothing was sent or received for ``timeout`` seconds."""

    def __init__(self, timeout: float | None, on_idle: Callable[[], None]) -> None:
        self.timeout = timeout
        self.on_idle = on_idle
        self.last = 0.0
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def start(self) -> None:
        if self.timeout is not None:
            self.touch()
            self._task = asyncio.create_task(self._run(self.timeout))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self, timeout: float) -> None:  # noqa: ASYNC109 - a watchdog, not an API
        loop = asyncio.get_running_loop()
        while (left := self.last + timeout - loop.time()) > 0:  # noqa: ASYNC110 - a deadline
            await asyncio.sleep(left)
        log.info("streaming: connection idle for %.0f s, closing it", timeout)
        self.on_idle()


class SpdyStream:
    """A client-created SPDY stream: headers, input from the client, output to it."""

    def __init__(self, conn: SpdyConnection, frame: spdy.SynStream) -> None:
        self.id = frame.stream_id
        self.headers = frame.headers
        self.conn = conn
        self.input = InputStream(lambda n: conn.consumed(self.id, n))
        self.output = OutputStream(self._send, self._close)
        self.local_closed = False

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[0] if values else None

    async def _send(self, data: bytes) -> None:
        if self.local_closed or self.conn.closed.is_set():
            msg = "SPDY stream closed"
            raise BrokenPipeError(msg)
        for i in range(0, len(data), SPDY_MAX_DATA):
            self.conn.send(spdy.encode_data(self.id, data[i : i + SPDY_MAX_DATA]))
        await self.conn.drain()

    async def _close(self) -> None:
        if not self.local_closed and not self.conn.closed.is_set():
            self.local_closed = True
            self.conn.send(spdy.encode_data(self.id, b"", fin=True))
            await self.conn.drain()


def _negotiate(
    writer: asyncio.StreamWriter,
    offered: list[str],
    supported: tuple[str, ...],
    header: str,
    refusal: str,
) -> str | None:
    """The first of the client's ``offered`` protocols that is ``supported``.

    None when there is none, after answering 400 with ``refusal`` and the
    supported ones in ``header``.
    """
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        writer.write(response(400, [(header, ", ".join(supported))], refusal))
    return chosen


class _Connection:
    """What both sessions' server sides share: the transport, its idle watch, its reader task.

    A subclass says what the end of the connection releases (``_close``) and
    what a chunk read carries (``_received``).
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_timeout: float | None
    ) -> None:
        self.idle = IdleWatch(idle_timeout, self._close)
        self.reader = reader
        self.writer = writer
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._read_loop())
        self.idle.start()

    def _close(self) -> None:
        raise NotImplementedError

    def _received(self, data: bytes) -> bool:
        """Handle ``data`` read from the peer; True when the session is over."""
        raise NotImplementedError

    async def _drain(self) -> None:
        try:
            await self.writer.drain()
        except ConnectionError as e:
            self._close()
            msg = "connection lost"
            raise BrokenPipeError(msg) from e

    async def _stop(self) -> None:
        """Close the transport and stop reading (the end of ``shutdown``)."""
        self._close()
        self.idle.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read_loop(self) -> None:
        try:
            while data := await self.reader.read(READ_CHUNK):
                self.idle.touch()
                if self._received(data):
                    return
        except ConnectionError:
            pass
        finally:
            self._close()


class SpdyConnection(_Connection):
    """The server side of one SPDY/3.1 session (streams are created by the client).

    Flow control: the server returns window space (WINDOW_UPDATE) as the
    handler consumes input, so a peer that honours windows never stalls; it
    does not hold its own output to the peer's window, because Kubernetes'
    SPDY peers (moby/spdystream) neither send nor honour WINDOW_UPDATE.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        idle_timeout: float | None = None,
    ) -> None:
        super().__init__(reader, writer, idle_timeout)
        self.parser = spdy.FrameParser()
        self.compressor = spdy.HeaderCompressor()
        self.streams: dict[int, SpdyStream] = {}
        self.new_streams: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self.last_stream_id = 0
        self.peer_initial_window = spdy.DEFAULT_WINDOW

    def send(self, frame: bytes) -> None:
        if not self.closed.is_set():
            self.idle.touch()
            self.writer.write(frame)

    async def drain(self) -> None:
        await self._drain()

    def consumed(self, stream_id: int, n: int) -> None:
        if n and stream_id in self.streams:
            self.send(spdy.encode_window_update(stream_id, n))

    def reset(self, stream_id: int, status: int) -> None:
        self.send(spdy.encode_rst_stream(stream_id, status))
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.input.feed_eof()
            stream.local_closed = True

    async def accept_stream(self) -> SpdyStream | None:
        """The next stream the client creates; None once the connection is closed."""
        return await self.new_streams.get()

    def _close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            for stream in self.streams.values():
                stream.input.feed_eof()
            self.new_streams.put_nowait(None)
            self.writer.close()

    async def shutdown(self) -> None:
        """GOAWAY, close the transport and stop reading."""
        self.send(spdy.encode_goaway(self.last_stream_id))
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        await self._stop()

    def _received(self, data: bytes) -> bool:
        try:
            for frame in self.parser.feed(data):
                self._handle(frame)
                if self.closed.is_set():
                    return True
        except spdy.ProtocolError as e:
            log.info("streaming: malformed SPDY frame, closing the connection: %s", e)
            self.send(spdy.encode_goaway(self.last_stream_id, spdy.GOAWAY_PROTOCOL_ERROR))
            return True
        return False

    def _handle(self, frame: spdy.Frame) -> None:  # noqa: PLR0912
        if isinstance(frame, spdy.SynStream):
            if frame.stream_id % 2 == 0 or frame.stream_id <= self.last_stream_id:
                msg = f"client stream id {frame.stream_id} is even or not increasing"
                raise spdy.ProtocolError(msg)
            self.last_stream_id = frame.stream_id
            stream = SpdyStream(self, frame)
            self.streams[frame.stream_id] = stream
            self.send(spdy.encode_syn_reply(self.compressor, frame.stream_id, {}))
            if frame.fin:
                stream.input.feed_eof()
            self.new_streams.put_nowait(stream)
        elif isinstance(frame, spdy.DataFrame):
            target = self.streams.get(frame.stream_id)
            if target is None:
                self.send(spdy.encode_rst_stream(frame.stream_id, spdy.RST_INVALID_STREAM))
                return
            target.input.feed(frame.data)
            if frame.fin:
                target.input.feed_eof()
        elif isinstance(frame, spdy.RstStream):
            gone = self.streams.pop(frame.stream_id, None)
            if gone is not None:
                gone.input.feed_eof()
                gone.local_closed = True
        elif isinstance(frame, spdy.Ping):
            if frame.ping_id % 2 == 1:  # a client's ping: echo it; even ids answer ours
                self.send(spdy.encode_ping(frame.ping_id))
        elif isinstance(frame, spdy.GoAway):
            self._close()
        elif isinstance(frame, spdy.Settings):
            self.peer_initial_window = frame.values.get(
                spdy.SETTINGS_INITIAL_WINDOW_SIZE, self.peer_initial_window
            )
        elif isinstance(frame, spdy.HeadersFrame) and frame.fin:
            known = self.streams.get(frame.stream_id)
            if known is not None:
                known.input.feed_eof()
        # SYN_REPLY (we create no streams), WINDOW_UPDATE (see class doc), unknown: ignored.


class WsConnection(_Connection):
    """The server side of one channel-multiplexed WebSocket (k8s channel protocols)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: str,
        max_message: int,
        idle_timeout: float | None = None,
    ) -> None:
        super().__init__(reader, writer, idle_timeout)
        self.protocol = protocol
        self.base64 = protocol in rc.WS_BASE64
        self.v5 = protocol == rc.WS_V5
        self.parser = websocket.FrameParser(require_mask=True, max_message=max_message)
        self.inputs: dict[int, InputStream] = {}
        self.close_sent = False

    def input(self, channel: int) -> InputStream:
        stream = self.inputs.get(channel)
        if stream is None:
            stream = self.inputs[channel] = InputStream()
        return stream

    def output(self, channel: int) -> OutputStream:
        """A channel to the client; closing it sends nothing.

        The server never sends v5 close-channel messages (client-go discards
        them as "unknown stream id 255"); the session's end closes the socket.
        """

        async def send(data: bytes) -> None:
            await self.send_channel(channel, data)

        async def close() -> None:
            return

        return OutputStream(send, close)

    async def send_channel(self, channel: int, data: bytes) -> None:
        if self.closed.is_set() or self.close_sent:
            msg = "WebSocket closed"
            raise BrokenPipeError(msg)
        if self.base64:
            frame = websocket.encode_frame(
                websocket.OP_TEXT, str(channel).encode() + base64.b64encode(data)
            )
        else:
            frame = websocket.encode_frame(websocket.OP_BINARY, bytes([channel]) + data)
        self.idle.touch()
        self.writer.write(frame)
        await self._drain()

    async def close(self, code: int = websocket.CLOSE_NORMAL, reason: str = "") -> None:
        if not self.close_sent and not self.closed.is_set():
            self.close_sent = True
            self.writer.write(websocket.encode_close(code, reason))
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()

    def _close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            for stream in self.inputs.values():
                stream.feed_eof()
            self.writer.close()

    async def shutdown(self) -> None:
        """Close handshake (waiting briefly for the client's close), then the transport."""
        await self.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_WAIT):
                await self.closed.wait()
        await self._stop()

    def _received(self, data: bytes) -> bool:
        try:
            for msg in self.parser.feed(data):
                if msg.opcode == websocket.OP_PING:
                    if not self.close_sent:
                        self.writer.write(websocket.encode_frame(websocket.OP_PONG, msg.data))
                elif msg.opcode == websocket.OP_CLOSE:
                    if not self.close_sent:
                        self.close_sent = True
                        code = msg.close_code or websocket.CLOSE_NORMAL
                        self.writer.write(websocket.encode_close(code))
                    return True
                elif msg.opcode != websocket.OP_PONG:
                    self._deliver(msg)
        except websocket.ProtocolError as e:
            log.info("streaming: malformed WebSocket frame, closing the connection: %s", e)
            if not self.close_sent:
                self.close_sent = True
                self.writer.write(websocket.encode_close(e.code, str(e)[:100]))
            return True
        return False

    def _deliver(self, msg: websocket.Message) -> None:
        data = msg.data
        if self.base64:
            if msg.opcode != websocket.OP_TEXT or not data[:1].isdigit():
                err = "base64 channel protocols carry text messages starting with the channel digit"
                raise websocket.ProtocolError(err, websocket.CLOSE_INVALID_DATA)
            try:
                channel, payload = int(data[:1]), base64.b64decode(data[1:], validate=True)
            except ValueError as e:
                raise websocket.ProtocolError(str(e), websocket.CLOSE_INVALID_DATA) from e
        else:
            if not data:
                return
            channel, payload = data[0], data[1:]
        if self.v5 and channel == rc.CLOSE_CHANNEL:
            if payload:
                self.input(payload[0]).feed_eof()
            return
        stream = self.inputs.get(channel)
        if stream is not None:
            stream.feed(payload)
