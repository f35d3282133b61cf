"""The streaming server end to end over real sockets, with a fake session handler.

The handler runs no containers: ``exec`` interprets a tiny command language
(echo to stdout and stderr, copy stdin, report resizes, exit with a code, wait
forever), so these tests check the protocol layer alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import struct
from typing import TYPE_CHECKING, cast

import pytest

from pycontainerd.cri.streaming import remotecommand as rc
from pycontainerd.cri.streaming import spdy, testing, tls, websocket
from pycontainerd.cri.streaming.server import StreamingServer
from pycontainerd.cri.streaming.session import CommandStreams, PortStream, StreamRequest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class FakeHandler:
    """payload = (command, arg). Records what happened for the assertions."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.resizes: list[rc.TerminalSize] = []
        self.forwarded: list[int] = []

    async def exec(self, request: StreamRequest, streams: CommandStreams) -> int:
        command, arg = cast("tuple[str, str]", request.payload)
        self.started.set()
        if command == "echo-exit":
            assert streams.stdout is not None
            assert streams.stderr is not None
            await streams.stdout.write(b"out\n")
            await streams.stderr.write(b"err\n")
            return int(arg)
        if command == "cat":
            assert streams.stdin is not None
            assert streams.stdout is not None
            data = await streams.stdin.read_all()
            await streams.stdout.write(data.upper())
            return 0
        if command == "resizes":
            assert streams.stdout is not None
            async for size in streams.resizes():
                self.resizes.append(size)
                await streams.stdout.write(f"{size.height} {size.width}\n".encode())
                if len(self.resizes) == int(arg):
                    return 0
            return 1
        if command == "fail":
            raise RuntimeError(arg)
        if command == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        raise AssertionError(command)

    async def attach(self, request: StreamRequest, streams: CommandStreams) -> int:
        return await self.exec(request, streams)

    async def port_forward(self, request: StreamRequest, stream: PortStream) -> None:
        self.forwarded.append(stream.port)
        if stream.port == 2:
            self.started.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if stream.port == 1:
            msg = "connection refused"
            raise ConnectionRefusedError(msg)
        while data := await stream.input.read():
            await stream.output.write(data[::-1])


@pytest.fixture
async def server() -> AsyncIterator[StreamingServer]:
    handler = FakeHandler()
    srv = StreamingServer(handler, "127.0.0.1", 0)
    await srv.start()
    srv.fake = handler  # type: ignore[attr-defined]  # the tests' back door
    try:
        yield srv
    finally:
        await srv.close()


def exec_url(
    srv: StreamingServer,
    command: str,
    arg: str = "",
    *,
    stdin: bool = False,
    stderr: bool = True,
    tty: bool = False,
) -> str:
    return srv.register(
        StreamRequest("exec", (command, arg), stdin=stdin, stdout=True, stderr=stderr, tty=tty)
    )


async def wait_idle(srv: StreamingServer) -> None:
    async with asyncio.timeout(10):
        await srv.wait_idle()


# -- SPDY ---------------------------------------------------------------------------


async def test_spdy_exec_gives_both_streams_and_exit_code_as_status(
    server: StreamingServer,
) -> None:
    assert server.port != 0
    res = await testing.spdy_exec(exec_url(server, "echo-exit", "7"))
    assert res.protocol == rc.SPDY_V4
    assert (res.stdout, res.stderr) == (b"out\n", b"err\n")
    status = testing.status_of(res)
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"] == {"causes": [{"reason": "ExitCode", "message": "7"}]}
    assert res.exit_code == 7


async def test_spdy_exec_success_status(server: StreamingServer) -> None:
    res = await testing.spdy_exec(exec_url(server, "echo-exit", "0"))
    assert json.loads(res.error) == {"metadata": {}, "status": "Success"}


async def test_spdy_older_protocols_send_plain_error_text(server: StreamingServer) -> None:
    res = await testing.spdy_exec(
        exec_url(server, "echo-exit", "3"), protocols=("v2.channel.k8s.io",)
    )
    assert res.protocol == "v2.channel.k8s.io"
    assert res.error == b"command terminated with non-zero exit code: 3"
    ok = await testing.spdy_exec(
        exec_url(server, "echo-exit", "0"), protocols=("v3.channel.k8s.io",)
    )
    assert ok.error == b""


async def test_spdy_handler_failure_is_reported(server: StreamingServer) -> None:
    res = await testing.spdy_exec(exec_url(server, "fail", "no such container"))
    status = testing.status_of(res)
    assert status["status"] == "Failure"
    assert status["message"] == "no such container"


async def test_spdy_stdin_round_trip(server: StreamingServer) -> None:
    payload = os.urandom(200_000).hex().encode()  # several data frames each way
    res = await testing.spdy_exec(
        exec_url(server, "cat", stdin=True, stderr=False), stdin=payload, stderr=False
    )
    assert res.stdout == payload.upper()
    assert res.exit_code == 0


async def test_spdy_resize_events_reach_the_handler(server: StreamingServer) -> None:
    sizes = [rc.TerminalSize(80, 24), rc.TerminalSize(132, 43)]
    url = exec_url(server, "resizes", "2", tty=True, stderr=False)
    res = await testing.spdy_exec(url, tty=True, resizes=sizes)
    assert server.fake.resizes == sizes  # type: ignore[attr-defined]
    assert res.stdout == b"24 80\n43 132\n"


async def test_spdy_ping_is_answered(server: StreamingServer) -> None:
    c = await testing.SpdyClient.connect(exec_url(server, "hang"))
    try:
        c.send_raw(spdy.encode_ping(41))
        async with asyncio.timeout(10):
            await c.wait_for(lambda: any(isinstance(f, spdy.Ping) for f in c.frames))
        assert [f for f in c.frames if isinstance(f, spdy.Ping)] == [spdy.Ping(41)]
    finally:
        await c.close()


async def test_spdy_window_updates_follow_consumed_input(server: StreamingServer) -> None:
    c = await testing.SpdyClient.connect(exec_url(server, "cat", stdin=True, stderr=False))
    try:
        await c.create_stream({"streamtype": "error"})
        sin = await c.create_stream({"streamtype": "stdin"})
        out = await c.create_stream({"streamtype": "stdout"})
        await c.send(sin, b"x" * 1000, fin=True)
        assert await c.read_all(out) == b"X" * 1000
        updates = [f for f in c.frames if isinstance(f, spdy.WindowUpdate)]
        assert sum(u.delta for u in updates if u.stream_id == sin) == 1000
    finally:
        await c.close()


async def test_spdy_unknown_protocol_is_400_with_the_supported_list(
    server: StreamingServer,
) -> None:
    url = exec_url(server, "echo-exit", "0")
    with pytest.raises(ConnectionRefusedError) as e:
        await testing.SpdyClient.connect(url, ("v9.channel.k8s.io",))
    assert "400" in str(e.value)
    assert "v4.channel.k8s.io" in str(e.value)
    assert "channel.k8s.io" in str(e.value)


async def test_spdy_goaway_after_the_session(server: StreamingServer) -> None:
    c = await testing.SpdyClient.connect(exec_url(server, "echo-exit", "0", stderr=False))
    try:
        await c.create_stream({"streamtype": "error"})
        await c.create_stream({"streamtype": "stdout"})
        async with asyncio.timeout(10):
            await c.closed.wait()
        assert any(isinstance(f, spdy.GoAway) and f.status == spdy.GOAWAY_OK for f in c.frames)
    finally:
        await c.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x80\x02\x00\x01\x00\x00\x00\x00",  # SPDY version 2
        b"\x80\x03\x00\x06\x00\x00\x00\x03abc",  # PING of 3 bytes
        b"\x80\x03\x00\x01\x00\x00\x00\x0e"
        + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        + b"junk",  # bad zlib
    ],
)
async def test_malformed_spdy_frame_closes_that_connection_only(
    server: StreamingServer, garbage: bytes
) -> None:
    other = await testing.SpdyClient.connect(exec_url(server, "cat", stdin=True, stderr=False))
    bad = await testing.SpdyClient.connect(exec_url(server, "hang"))
    try:
        bad.send_raw(garbage)
        async with asyncio.timeout(10):
            await bad.closed.wait()
        assert any(
            isinstance(f, spdy.GoAway) and f.status == spdy.GOAWAY_PROTOCOL_ERROR
            for f in bad.frames
        )
        await other.create_stream({"streamtype": "error"})
        sin = await other.create_stream({"streamtype": "stdin"})
        out = await other.create_stream({"streamtype": "stdout"})
        await other.send(sin, b"still here", fin=True)
        assert await other.read_all(out) == b"STILL HERE"
    finally:
        await bad.close()
        await other.close()


async def _close_while_running(
    server: StreamingServer, c: testing.SpdyClient | testing.WsClient
) -> None:
    """Once the handler runs, the client goes: the handler is cancelled, the server idle."""
    fake = server.fake  # type: ignore[attr-defined]
    async with asyncio.timeout(10):
        await fake.started.wait()
    await c.close()
    async with asyncio.timeout(10):
        await fake.cancelled.wait()
    await wait_idle(server)


async def test_client_disconnect_mid_session_cancels_the_handler(server: StreamingServer) -> None:
    c = await testing.SpdyClient.connect(exec_url(server, "hang", stderr=False))
    await c.create_stream({"streamtype": "error"})
    await c.create_stream({"streamtype": "stdout"})
    await _close_while_running(server, c)
    assert [
        t for t in asyncio.all_tasks() if "_run_command" in repr(t) or "_read_loop" in repr(t)
    ] == []


async def test_spdy_portforward_pairs_streams_and_reports_errors(server: StreamingServer) -> None:
    url = server.register(StreamRequest("portforward", None))
    c = await testing.SpdyClient.connect(url, ("portforward.k8s.io",))
    try:
        assert c.protocol == "portforward.k8s.io"
        e1 = await c.create_stream({"streamtype": "error", "port": "8080", "requestid": "0"})
        d1 = await c.create_stream({"streamtype": "data", "port": "8080", "requestid": "0"})
        e2 = await c.create_stream({"streamtype": "error", "port": "1", "requestid": "1"})
        await c.create_stream({"streamtype": "data", "port": "1", "requestid": "1"})
        await c.send(d1, b"abc", fin=True)
        assert await c.read_all(d1) == b"cba"
        assert await c.read_all(e1) == b""
        assert b"error forwarding port 1: connection refused" in await c.read_all(e2)
    finally:
        await c.close()


# -- tokens and HTTP ----------------------------------------------------------------


async def test_reused_token_is_404(server: StreamingServer) -> None:
    url = exec_url(server, "echo-exit", "0")
    await testing.spdy_exec(url)
    with pytest.raises(ConnectionRefusedError, match="404"):
        await testing.spdy_exec(url)
    with pytest.raises(ConnectionRefusedError, match="404"):
        await testing.ws_exec(url)


async def test_expired_token_is_404() -> None:
    srv = StreamingServer(FakeHandler(), token_ttl=0.0)
    await srv.start()
    try:
        url = exec_url(srv, "echo-exit", "0")
        with pytest.raises(ConnectionRefusedError, match="404"):
            await testing.spdy_exec(url)
    finally:
        await srv.close()


async def test_token_of_another_kind_or_unknown_path_is_404(server: StreamingServer) -> None:
    url = exec_url(server, "echo-exit", "0")
    with pytest.raises(ConnectionRefusedError, match="404"):
        await testing.spdy_exec(url.replace("/exec/", "/attach/"))
    with pytest.raises(ConnectionRefusedError, match="404"):
        await testing.spdy_exec(server.base_url + "/nothing")


async def test_request_without_upgrade_is_400(server: StreamingServer) -> None:
    resp, _, writer = await testing.open_upgrade(exec_url(server, "echo-exit", "0"), [])
    writer.close()
    assert resp.status == 400


async def test_attach_uses_the_attach_handler(server: StreamingServer) -> None:
    url = server.register(StreamRequest("attach", ("echo-exit", "0")))
    res = await testing.spdy_exec(url)
    assert (res.stdout, res.exit_code) == (b"out\n", 0)


# -- WebSocket ----------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [rc.WS_V5, rc.WS_V4, rc.WS_V4_BASE64])
async def test_ws_exec_gives_both_streams_and_exit_code(
    server: StreamingServer, protocol: str
) -> None:
    res = await testing.ws_exec(exec_url(server, "echo-exit", "7"), protocols=("bogus", protocol))
    assert res.protocol == protocol
    assert (res.stdout, res.stderr) == (b"out\n", b"err\n")
    assert res.exit_code == 7


@pytest.mark.parametrize("protocol", [rc.WS_V1_BASE64, rc.WS_V1, rc.WS_V2, rc.WS_V3])
async def test_ws_older_protocols_send_plain_error_text(
    server: StreamingServer, protocol: str
) -> None:
    res = await testing.ws_exec(exec_url(server, "echo-exit", "5"), protocols=(protocol,))
    assert res.protocol == protocol
    assert res.stdout == b"out\n"
    assert res.error == b"command terminated with non-zero exit code: 5"


async def test_ws_first_message_announces_the_lowest_writable_channel(
    server: StreamingServer,
) -> None:
    c = await testing.WsClient.connect(exec_url(server, "echo-exit", "0"), (rc.WS_V5,))
    try:
        async with asyncio.timeout(10):
            await c.closed.wait()
        assert c.messages[0] == (rc.STDOUT, b"")
        # client-go logs and drops server-sent close-channel (255) messages: none are sent.
        assert [ch for ch, _ in c.messages if ch == rc.CLOSE_CHANNEL] == []
        assert c.close_code == websocket.CLOSE_NORMAL
    finally:
        await c.close()


async def test_ws_stdin_round_trip_with_v5_close(server: StreamingServer) -> None:
    res = await testing.ws_exec(
        exec_url(server, "cat", stdin=True, stderr=False), stdin=b"hello ws"
    )
    assert res.stdout == b"HELLO WS"
    assert res.exit_code == 0


async def test_ws_resize_events_reach_the_handler(server: StreamingServer) -> None:
    sizes = [rc.TerminalSize(100, 30)]
    res = await testing.ws_exec(
        exec_url(server, "resizes", "1", tty=True, stderr=False), resizes=sizes
    )
    assert server.fake.resizes == sizes  # type: ignore[attr-defined]
    assert res.stdout == b"30 100\n"


async def test_ws_ping_gets_pong(server: StreamingServer) -> None:
    url = exec_url(server, "hang")
    resp, reader, writer = await testing.open_upgrade(
        url,
        [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", rc.WS_V5),
        ],
        method="GET",
    )
    assert resp.status == 101
    assert resp.headers["sec-websocket-accept"] == ["s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
    writer.write(websocket.encode_frame(websocket.OP_PING, b"hi", mask_key=b"abcd"))
    parser = websocket.FrameParser(require_mask=False)
    got: list[websocket.Message] = []
    async with asyncio.timeout(10):
        while not any(m.opcode == websocket.OP_PONG for m in got):
            got += parser.feed(await reader.read(1024))
    assert websocket.Message(websocket.OP_PONG, b"hi") in got
    writer.close()


async def test_ws_unknown_subprotocol_is_400_with_the_supported_list(
    server: StreamingServer,
) -> None:
    with pytest.raises(ConnectionRefusedError) as e:
        await testing.WsClient.connect(exec_url(server, "echo-exit", "0"), ("v9.channel.k8s.io",))
    text = str(e.value)
    assert "400" in text
    for p in rc.WS_REMOTECOMMAND:
        assert p in text


@pytest.mark.parametrize(
    "garbage",
    [
        websocket.encode_frame(websocket.OP_BINARY, b"\x00x"),  # unmasked client frame
        websocket.encode_frame(
            websocket.OP_PING, b"x" * 126, mask_key=b"abcd"
        ),  # control frame too big
        websocket.encode_frame(websocket.OP_CONT, b"x", mask_key=b"abcd"),  # nothing to continue
        bytes([0xC2, 0x80]) + b"abcd",  # RSV1 without an extension
    ],
)
async def test_malformed_ws_frame_closes_that_connection_only(
    server: StreamingServer, garbage: bytes
) -> None:
    other = await testing.WsClient.connect(
        exec_url(server, "cat", stdin=True, stderr=False), (rc.WS_V5,)
    )
    bad = await testing.WsClient.connect(exec_url(server, "hang"), (rc.WS_V5,))
    try:
        bad.send_raw(garbage)
        async with asyncio.timeout(10):
            await bad.closed.wait()
        assert bad.close_code == websocket.CLOSE_PROTOCOL_ERROR
        await other.send(rc.STDIN, b"alive")
        await other.send(rc.CLOSE_CHANNEL, bytes([rc.STDIN]))
        async with asyncio.timeout(10):
            await other.closed.wait()
        assert other.channel(rc.STDOUT) == b"ALIVE"
    finally:
        await bad.close()
        await other.close()


async def test_ws_client_disconnect_cancels_the_handler(server: StreamingServer) -> None:
    c = await testing.WsClient.connect(exec_url(server, "hang"), (rc.WS_V4,))
    await _close_while_running(server, c)


async def test_ws_portforward_prefixes_ports_and_relays(server: StreamingServer) -> None:
    url = server.register(StreamRequest("portforward", None)) + "?port=8080&port=1"
    c = await testing.WsClient.connect(url, ("portforward.k8s.io",))
    try:
        await c.send(0, b"xyz")
        async with asyncio.timeout(10):
            await c.wait_for(
                lambda: c.channel(0) == struct.pack("<H", 8080) + b"zyx" and len(c.channel(3)) > 2
            )
        assert c.channel(1) == struct.pack("<H", 8080)
        assert c.channel(2) == struct.pack("<H", 1)
        assert b"connection refused" in c.channel(3)
    finally:
        await c.close()


# -- load -----------------------------------------------------------------------------


async def test_100_concurrent_sessions(server: StreamingServer) -> None:
    async def one(i: int) -> None:
        if i % 2:
            res = await testing.spdy_exec(exec_url(server, "echo-exit", str(i % 5)))
        else:
            res = await testing.ws_exec(exec_url(server, "echo-exit", str(i % 5)))
        assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", i % 5)

    async with asyncio.timeout(60):
        await asyncio.gather(*(one(i) for i in range(100)))
    await wait_idle(server)


# -- TLS ------------------------------------------------------------------------------


async def test_tls_with_a_generated_self_signed_certificate() -> None:
    server_ctx, cert_pem = tls.self_signed_context("127.0.0.1")
    srv = StreamingServer(FakeHandler(), "127.0.0.1", 0, ssl_context=server_ctx)
    await srv.start()
    try:
        url = exec_url(srv, "echo-exit", "7")
        assert url.startswith("https://127.0.0.1:")
        client_ctx = ssl.create_default_context(cadata=cert_pem.decode())  # verifies the SAN
        res = await testing.spdy_exec(url, ssl_context=client_ctx)
        assert (res.stdout, res.stderr, res.exit_code) == (b"out\n", b"err\n", 7)
        # A client without the certificate refuses the server.
        with pytest.raises(ssl.SSLCertVerificationError):
            await testing.spdy_exec(
                exec_url(srv, "echo-exit", "0"), ssl_context=ssl.create_default_context()
            )
    finally:
        await srv.close()


async def test_spdy_portforward_concurrent_connections_on_one_session(
    server: StreamingServer,
) -> None:
    url = server.register(StreamRequest("portforward", None))
    c = await testing.SpdyClient.connect(url, ("portforward.k8s.io",))
    try:
        data_ids = []
        for rid in range(10):
            port = str(8000 + rid % 3)
            await c.create_stream({"streamtype": "error", "port": port, "requestid": str(rid)})
            data_ids.append(
                await c.create_stream({"streamtype": "data", "port": port, "requestid": str(rid)})
            )
        for i, sid in enumerate(data_ids):
            await c.send(sid, f"conn{i}".encode(), fin=True)
        replies = await asyncio.gather(*(c.read_all(sid) for sid in data_ids))
        assert replies == [f"conn{i}".encode()[::-1] for i in range(10)]
        assert sorted(server.fake.forwarded) == sorted(8000 + i % 3 for i in range(10))  # type: ignore[attr-defined]
    finally:
        await c.close()


async def test_portforward_ends_when_the_client_goes(server: StreamingServer) -> None:
    url = server.register(StreamRequest("portforward", None))
    c = await testing.SpdyClient.connect(url, ("portforward.k8s.io",))
    await c.create_stream({"streamtype": "error", "port": "2", "requestid": "0"})
    await c.create_stream({"streamtype": "data", "port": "2", "requestid": "0"})
    await _close_while_running(server, c)


async def test_portforward_outside_the_allowed_ports_is_an_error(server: StreamingServer) -> None:
    url = server.register(StreamRequest("portforward", None, ports=(80,)))
    c = await testing.SpdyClient.connect(url, ("portforward.k8s.io",))
    try:
        err = await c.create_stream({"streamtype": "error", "port": "81", "requestid": "0"})
        await c.create_stream({"streamtype": "data", "port": "81", "requestid": "0"})
        assert b"port 81 is not among the forwarded ports [80]" in await c.read_all(err)
        assert server.fake.forwarded == []  # type: ignore[attr-defined]
    finally:
        await c.close()


async def test_session_ends_if_the_client_does_not_create_its_streams() -> None:
    handler = FakeHandler()
    srv = StreamingServer(handler, stream_creation_timeout=0.2)
    await srv.start()
    try:
        c = await testing.SpdyClient.connect(exec_url(srv, "echo-exit", "0"))
        await c.create_stream({"streamtype": "error"})  # stdout and stderr never come
        async with asyncio.timeout(10):
            await c.closed.wait()
        assert not handler.started.is_set()
        await c.close()
        await wait_idle(srv)
    finally:
        await srv.close()


@pytest.mark.parametrize("transport", ["spdy", "ws"])
async def test_idle_connection_is_closed_and_its_session_ended(transport: str) -> None:
    handler = FakeHandler()
    srv = StreamingServer(handler, idle_timeout=0.3)
    await srv.start()
    try:
        url = exec_url(srv, "hang", stderr=False)
        if transport == "spdy":
            c: testing.SpdyClient | testing.WsClient = await testing.SpdyClient.connect(url)
            assert isinstance(c, testing.SpdyClient)
            await c.create_stream({"streamtype": "error"})
            await c.create_stream({"streamtype": "stdout"})
        else:
            c = await testing.WsClient.connect(url, (rc.WS_V5,))
        async with asyncio.timeout(10):
            await handler.started.wait()
            await c.closed.wait()  # nobody sent anything for 0.3 s
            await handler.cancelled.wait()
        await c.close()
        await wait_idle(srv)
    finally:
        await srv.close()


async def raw_exchange(srv: StreamingServer, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(data)
    await writer.drain()
    try:
        return await reader.read()
    finally:
        writer.close()


async def test_bad_http_is_refused_and_the_server_keeps_serving(server: StreamingServer) -> None:
    assert (await raw_exchange(server, b"NONSENSE\r\n\r\n")).startswith(b"HTTP/1.1 400 ")
    huge = b"GET /exec/x HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n"
    assert (await raw_exchange(server, huge)).startswith(b"HTTP/1.1 431 ")
    half = await asyncio.open_connection("127.0.0.1", server.port)
    half[1].write(b"GET /exec/")  # and goes away
    half[1].close()
    res = await testing.spdy_exec(exec_url(server, "echo-exit", "0"))
    assert res.exit_code == 0
    await wait_idle(server)
