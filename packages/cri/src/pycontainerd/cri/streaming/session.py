"""The interface between the streaming server and whoever runs commands.

The CRI service registers a :class:`StreamRequest` with the server (which
returns the URL for the CRI response) and implements :class:`StreamingHandler`.
When a client opens the URL and the upgrade succeeds, the server calls the
handler with transport-neutral streams: the same handler serves SPDY/3.1 and
WebSocket clients of every protocol version.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from pycontainerd.cri.streaming.remotecommand import TerminalSize

Kind = Literal["exec", "attach", "portforward"]


@dataclass(frozen=True)
class StreamRequest:
    """What a one-time URL stands for.

    Attributes:
        kind: ``exec``, ``attach`` or ``portforward`` (the URL path's first part).
        payload: the caller's own request object (the CRI ExecRequest, ...),
            handed back to the handler untouched.
        stdin, stdout, stderr, tty: the stdio the command gets (exec/attach);
            with ``tty`` there is no separate stderr and resize events flow.
        ports: the ports a port-forward may use (empty: any).
    """

    kind: Kind
    payload: object = None
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True
    tty: bool = False
    ports: tuple[int, ...] = ()


class InputStream:
    """Bytes from the client. ``read()`` returns b"" once the client closed it."""

    def __init__(self, on_consumed: Callable[[int], None] | None = None) -> None:
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._event = asyncio.Event()
        self._on_consumed = on_consumed

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._chunks

    def feed(self, data: bytes) -> None:
        if data and not self._eof:
            self._chunks.append(data)
            self._event.set()

    def feed_eof(self) -> None:
        self._eof = True
        self._event.set()

    async def read(self) -> bytes:
        """The next chunk, or b"" at end of stream."""
        while not self._chunks:
            if self._eof:
                return b""
            self._event.clear()
            await self._event.wait()
        data = self._chunks.popleft()
        if self._on_consumed is not None:
            self._on_consumed(len(data))
        return data

    async def read_all(self) -> bytes:
        out = bytearray()
        while chunk := await self.read():
            out += chunk
        return bytes(out)


class OutputStream:
    """Bytes to the client. ``write`` raises BrokenPipeError once the connection is gone."""

    def __init__(
        self, send: Callable[[bytes], Awaitable[None]], close: Callable[[], Awaitable[None]]
    ) -> None:
        self._send = send
        self._close = close
        self.closed = False

    async def write(self, data: bytes) -> None:
        if self.closed:
            msg = "stream closed"
            raise BrokenPipeError(msg)
        if data:
            await self._send(data)

    async def close(self) -> None:
        """End of this stream (the client reads EOF); idempotent."""
        if not self.closed:
            self.closed = True
            await self._close()


@dataclass
class CommandStreams:
    """The stdio of one exec or attach session (None: not requested)."""

    protocol: str
    stdin: InputStream | None = None
    stdout: OutputStream | None = None
    stderr: OutputStream | None = None
    resize_queue: asyncio.Queue[TerminalSize | None] | None = field(default=None)

    async def resizes(self) -> AsyncIterator[TerminalSize]:
        """Terminal size changes until the client closes the resize stream."""
        if self.resize_queue is None:
            return
        while (size := await self.resize_queue.get()) is not None:
            yield size


@dataclass
class PortStream:
    """One forwarded connection: bytes in, bytes out (port-forward)."""

    port: int
    input: InputStream
    output: OutputStream


class CommandFailedError(Exception):
    """A failure that is not an exit code; the message reaches the client's error stream."""


class StreamingHandler(Protocol):
    """What the streaming server calls once a client is connected.

    Every method runs in its own task and is cancelled if the client goes away
    (the handler must then stop the process or connection it drives). A raised
    exception is reported on the error stream (its message), not propagated.
    """

    async def exec(self, request: StreamRequest, streams: CommandStreams) -> int:
        """Run the command of ``request.payload``; return its exit code.

        Output streams are closed by the server after return.
        """
        ...

    async def attach(self, request: StreamRequest, streams: CommandStreams) -> int:
        """Connect to a running container's stdio; return when it ends (exit code or 0)."""
        ...

    async def port_forward(self, request: StreamRequest, stream: PortStream) -> None:
        """Relay ``stream`` to ``stream.port`` in the pod until either side closes.

        Raise (for example ConnectionRefusedError) to report a failure on the
        port's error stream.
        """
        ...
