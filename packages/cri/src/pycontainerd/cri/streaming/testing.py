"""Clients of the streaming server, for tests: SPDY/3.1 and WebSocket, the Kubernetes way.

They follow what client-go's executors do: SPDY creates one stream per
``streamType`` (error first) and waits for each SYN_REPLY; WebSocket sends
channel-prefixed messages. Not for production use.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pycontainerd.cri.streaming import remotecommand as rc
from pycontainerd.cri.streaming import spdy, websocket

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable


@dataclass
class HttpResponse:
    """A response head (and, when not 101, the body)."""

    status: int
    headers: dict[str, list[str]]
    body: bytes


async def _read_response(reader: asyncio.StreamReader) -> HttpResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.setdefault(name.lower(), []).append(value.strip())
    body = b""
    if status != 101:
        body = await reader.readexactly(int(headers.get("content-length", ["0"])[0]))
    return HttpResponse(status, headers, body)


async def open_upgrade(
    url: str,
    headers: list[tuple[str, str]],
    method: str = "POST",
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[HttpResponse, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send an upgrade request to ``url`` (https: ``ssl_context``); the connection stays open."""
    u = urlsplit(url)
    assert u.hostname is not None  # noqa: S101
    assert u.port is not None  # noqa: S101
    tls = ssl_context if u.scheme == "https" else None
    reader, writer = await asyncio.open_connection(u.hostname, u.port, ssl=tls)
    target = u.path + (f"?{u.query}" if u.query else "")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {u.netloc}", *[f"{k}: {v}" for k, v in headers]]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return await _read_response(reader), reader, writer


@dataclass
class _ClientStream:
    data: bytearray = field(default_factory=bytearray)
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    replied: asyncio.Event = field(default_factory=asyncio.Event)
    reset: bool = False


class _UpgradedClient:
    """An upgraded connection that a task reads: each chunk goes to :meth:`_process`,
    and waiters on :attr:`changed` are woken after it; :attr:`closed` is set at the end.
    """  # noqa: D205

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.closed = asyncio.Event()
        self.changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read())

    def _process(self, data: bytes) -> bool:
        """Take in ``data``; True when the session is over."""
        raise NotImplementedError

    def _on_closed(self) -> None:
        """What else the end of the connection releases."""

    async def _read(self) -> None:
        try:
            while data := await self.reader.read(65536):
                done = self._process(data)
                async with self.changed:
                    self.changed.notify_all()
                if done:
                    return
        except ConnectionError:
            pass
        finally:
            self.closed.set()
            async with self.changed:
                self.changed.notify_all()
            self._on_closed()

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (checked as data arrives) or the connection closes."""
        async with self.changed:
            await self.changed.wait_for(lambda: predicate() or self.closed.is_set())

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class SpdyClient(_UpgradedClient):
    """A SPDY/3.1 client session over an upgraded connection."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str
    ) -> None:
        self.comp = spdy.HeaderCompressor()
        self.parser = spdy.FrameParser()
        self.streams: dict[int, _ClientStream] = {}
        self.next_id = 1
        self.frames: list[spdy.Frame] = []  # every frame received that is not stream data
        super().__init__(reader, writer, protocol)

    @classmethod
    async def connect(
        cls,
        url: str,
        protocols: tuple[str, ...] = (rc.SPDY_V4,),
        ssl_context: ssl.SSLContext | None = None,
    ) -> SpdyClient:
        resp, reader, writer = await open_upgrade(
            url,
            [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
            + [("X-Stream-Protocol-Version", p) for p in protocols],
            ssl_context=ssl_context,
        )
        if resp.status != 101:
            writer.close()
            msg = f"upgrade refused: {resp.status} {resp.body.decode()}"
            raise ConnectionRefusedError(msg)
        return cls(reader, writer, resp.headers.get("x-stream-protocol-version", [""])[0])

    def _process(self, data: bytes) -> bool:
        for frame in self.parser.feed(data):
            if isinstance(frame, spdy.DataFrame):
                s = self.streams[frame.stream_id]
                s.data += frame.data
                if frame.fin:
                    s.eof.set()
                continue
            self.frames.append(frame)
            if isinstance(frame, spdy.SynReply):
                self.streams[frame.stream_id].replied.set()
            elif isinstance(frame, spdy.RstStream):
                self.streams[frame.stream_id].reset = True
                self.streams[frame.stream_id].eof.set()
        return False

    def _on_closed(self) -> None:
        for s in self.streams.values():
            s.eof.set()
            s.replied.set()

    async def create_stream(self, headers: dict[str, str], *, fin: bool = False) -> int:
        """Create a stream and wait for the server's SYN_REPLY."""
        sid = self.next_id
        self.next_id += 2
        self.streams[sid] = _ClientStream()
        self.writer.write(
            spdy.encode_syn_stream(self.comp, sid, {k: [v] for k, v in headers.items()}, fin=fin)
        )
        await self.writer.drain()
        await self.streams[sid].replied.wait()
        return sid

    async def send(self, sid: int, data: bytes, *, fin: bool = False) -> None:
        self.writer.write(spdy.encode_data(sid, data, fin=fin))
        await self.writer.drain()

    async def read_all(self, sid: int) -> bytes:
        await self.streams[sid].eof.wait()
        return bytes(self.streams[sid].data)


@dataclass
class CommandResult:
    """What a remotecommand client saw."""

    stdout: bytes
    stderr: bytes
    error: bytes
    protocol: str

    @property
    def exit_code(self) -> int:
        return rc.parse_exit_status(self.error)


async def spdy_exec(
    url: str,
    *,
    stdin: bytes | None = None,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    resizes: list[rc.TerminalSize] | None = None,
    protocols: tuple[str, ...] = (rc.SPDY_V4,),
    ssl_context: ssl.SSLContext | None = None,
) -> CommandResult:
    """Run a remotecommand session the way client-go's SPDY executor does."""
    c = await SpdyClient.connect(url, protocols, ssl_context)
    try:
        err = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_ERROR})
        ids: dict[str, int] = {}
        if stdin is not None:
            ids["stdin"] = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_STDIN})
        if stdout:
            ids["stdout"] = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_STDOUT})
        if stderr and not tty:
            ids["stderr"] = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_STDERR})
        if tty:
            ids["resize"] = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_RESIZE})
            for size in resizes or []:
                await c.send(ids["resize"], rc.encode_resize(size))
        if stdin is not None:
            await c.send(ids["stdin"], stdin, fin=True)
        error = await c.read_all(err)
        out = await c.read_all(ids["stdout"]) if "stdout" in ids else b""
        errout = await c.read_all(ids["stderr"]) if "stderr" in ids else b""
        return CommandResult(out, errout, error, c.protocol)
    finally:
        await c.close()


class WsClient(_UpgradedClient):
    """A WebSocket client speaking Kubernetes' channel protocols."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str
    ) -> None:
        self.base64 = protocol in rc.WS_BASE64
        self.parser = websocket.FrameParser(require_mask=False)
        self.channels: dict[int, bytearray] = {}
        self.messages: list[tuple[int, bytes]] = []
        self.closed_channels: set[int] = set()
        self.close_code: int | None = None
        super().__init__(reader, writer, protocol)

    @classmethod
    async def connect(cls, url: str, protocols: tuple[str, ...]) -> WsClient:
        key = base64.b64encode(os.urandom(16)).decode()
        headers = [
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", key),
        ]
        if protocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(protocols)))
        resp, reader, writer = await open_upgrade(url, headers, method="GET")
        if resp.status != 101:
            writer.close()
            msg = f"upgrade refused: {resp.status} {resp.body.decode()}"
            raise ConnectionRefusedError(msg)
        if resp.headers.get("sec-websocket-accept") != [websocket.accept_key(key)]:
            msg = "bad Sec-WebSocket-Accept"
            raise ConnectionError(msg)
        return cls(reader, writer, resp.headers["sec-websocket-protocol"][0])

    def _process(self, data: bytes) -> bool:
        for msg in self.parser.feed(data):
            if msg.opcode == websocket.OP_CLOSE:
                self.close_code = msg.close_code
                if not self.writer.is_closing():
                    self.writer.write(websocket.encode_close(mask_key=os.urandom(4)))
                return True
            if msg.opcode in (websocket.OP_TEXT, websocket.OP_BINARY):
                if self.base64:
                    ch, payload = int(msg.data[:1]), base64.b64decode(msg.data[1:])
                else:
                    ch, payload = msg.data[0], msg.data[1:]
                self.messages.append((ch, payload))
                if ch == rc.CLOSE_CHANNEL:
                    self.closed_channels.add(payload[0])
                else:
                    self.channels.setdefault(ch, bytearray()).extend(payload)
        return False

    async def send(self, channel: int, data: bytes) -> None:
        if self.base64:
            body, op = str(channel).encode() + base64.b64encode(data), websocket.OP_TEXT
        else:
            body, op = bytes([channel]) + data, websocket.OP_BINARY
        self.writer.write(websocket.encode_frame(op, body, mask_key=os.urandom(4)))
        await self.writer.drain()

    def channel(self, ch: int) -> bytes:
        return bytes(self.channels.get(ch, b""))


async def ws_exec(
    url: str,
    *,
    stdin: bytes | None = None,
    close_stdin: bool = True,
    resizes: list[rc.TerminalSize] | None = None,
    protocols: tuple[str, ...] = (rc.WS_V5,),
) -> CommandResult:
    """Run a remotecommand session over WebSocket until the server closes it."""
    c = await WsClient.connect(url, protocols)
    try:
        for size in resizes or []:
            await c.send(rc.RESIZE, rc.encode_resize(size))
        if stdin is not None:
            await c.send(rc.STDIN, stdin)
            if close_stdin and c.protocol == rc.WS_V5:
                await c.send(rc.CLOSE_CHANNEL, bytes([rc.STDIN]))
        await c.closed.wait()
        return CommandResult(
            c.channel(rc.STDOUT), c.channel(rc.STDERR), c.channel(rc.ERROR), c.protocol
        )
    finally:
        await c.close()


def status_of(result: CommandResult) -> dict[str, object]:
    """The error stream's Status JSON."""
    value = json.loads(result.error)
    assert isinstance(value, dict)  # noqa: S101
    return value
