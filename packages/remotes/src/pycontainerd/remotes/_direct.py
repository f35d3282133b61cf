"""Registry reads (``GET`` and ``HEAD``) on a blocking socket, by a thread, outside the event loop.

A pull's blobs are most of its bytes. Read through ``httpx`` and httpcore they
cross the event loop in ~64 KiB pieces, each copied by the protocol buffers,
woken through the loop and handed to a worker thread to be written: CPU that
the registry and the layer applier on the same machine want too. And the
first request through httpcore imports it, h11 and anyio's asyncio backend:
tens of milliseconds of a fresh daemon's first pull.

So :class:`DirectTransport` serves every ``GET`` and ``HEAD`` without a
request body (see :class:`._http.Client`, which also follows redirects and
runs the dump hooks): a thread connects (TLS with the host's ``ssl``
context), sends the request and reads the response head. A body is then
either drained by one thread into a sink (:meth:`DirectBody.drain`:
``recv_into`` a reused buffer, the sink hashes and writes it, all without the
GIL; the response's :data:`DIRECT` extension is the body), or iterated.

A response read to its end leaves its connection (HTTP/1.1 keep-alive, a
known length) in the transport's pool for the next direct request to that
server; an idle connection the server closed meanwhile is replaced.
A task cancelled while the thread works shuts the socket down and waits for
the thread, so no thread goes on reading, or writing into a sink, after the
caller has moved on.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import select
import socket
import threading
import time
from typing import TYPE_CHECKING, Final, TypeVar

from pycontainerd.core.closing import finish_shielded
from pycontainerd.remotes._http import (
    ConnectError,
    ConnectTimeout,
    Headers,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    Response,
    WriteError,
    WriteTimeout,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Callable

    from pycontainerd.remotes._http import Request

T = TypeVar("T")

#: The response extension that holds the :class:`DirectBody` of a direct response.
DIRECT: Final = "pycontainerd.direct"
#: Bytes a drain reads per ``recv_into`` at most.
BUFFER: Final = 1 << 20
_MAX_HEAD: Final = 64 * 1024
_INCOMPLETE: Final = "peer closed connection without sending complete message body"
_MAX_IDLE: Final = 8  # idle connections kept per server
_KEEP_IDLE: Final = 60.0  # seconds an idle connection is kept
_NO_BODY: Final = frozenset({204, 304})


class _AbortedError(Exception):
    """The connection was shut down on purpose (the caller was cancelled)."""


_Key = tuple[str, str, int]


class _Pool:
    """Idle keep-alive connections by ``(scheme, host, port)``, shared by worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[_Key, list[tuple[float, socket.socket]]] = {}
        self._closed = False

    def take(self, key: _Key) -> socket.socket | None:
        """An idle connection still open (nothing to read on it), or ``None``."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                if not idle:
                    return None
                since, sock = idle.pop()
            if time.monotonic() - since < _KEEP_IDLE and not _readable(sock):
                return sock
            sock.close()  # expired, closed by the server, or sent something unasked

    def give(self, key: _Key, sock: socket.socket) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self._closed and len(idle) < _MAX_IDLE:
                idle.append((time.monotonic(), sock))
                return
        sock.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, {}
        for socks in idle.values():
            for _, sock in socks:
                sock.close()


def _readable(sock: socket.socket) -> bool:
    """Whether ``sock`` has something to read (or hung up) now: ``poll``, any fd number."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class _Connection:
    """One blocking HTTP/1.1 exchange (used by one thread at a time), on a pooled connection."""

    def __init__(
        self, request: Request, context: Callable[[], ssl.SSLContext], pool: _Pool
    ) -> None:
        self.request = request
        self._context = context
        self._pool = pool
        self._key = request.url.origin
        self.sock: socket.socket | None = None
        self.reusable = False  # the server keeps the connection open after the response
        self.aborted = False
        self.pending = bytearray()  # bytes read past what was consumed
        self.framing = "eof"  # "length", "chunked" or "eof"
        self.remaining = 0  # bytes left: of the body ("length") or of the chunk ("chunked")
        self.done = False

    # -- the loop's side ---------------------------------------------------------------

    def abort(self) -> None:
        """Make a blocked ``connect``/``recv`` in the worker thread return at once."""
        self.aborted = True
        sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                # the plain socket's shutdown also for TLS: SSLSocket's drops its state
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        """Release the connection: to the pool when the whole response was read."""
        sock, self.sock = self.sock, None
        if sock is None:
            return
        if self.done and self.reusable and not self.pending and not self.aborted:
            self._pool.give(self._key, sock)
        else:
            sock.close()

    # -- the thread's side -------------------------------------------------------------

    def _timeouts(self) -> tuple[float | None, float | None]:
        return self.request.timeout

    def open(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Connect (or take an idle connection), send the request, read the response head."""
        self.sock = self._pool.take(self._key)
        if self.sock is not None:
            try:
                return self._exchange()
            except (ReadError, WriteError, RemoteProtocolError):
                if self.pending or self.aborted:
                    raise
                # the server closed the idle connection meanwhile: a new one
                self.sock.close()
                self.sock = None
        self._open_new()
        return self._exchange()

    def _open_new(self) -> None:
        url = self.request.url
        connect_timeout, _ = self._timeouts()
        try:
            self._connect(url.host, self._key[2], connect_timeout)
            if url.scheme == "https":
                assert self.sock is not None  # noqa: S101 - set by _connect
                self.sock = self._context().wrap_socket(self.sock, server_hostname=url.host)
        except TimeoutError as exc:
            raise ConnectTimeout(str(exc) or "connect timed out") from None
        except OSError as exc:
            self._check_aborted()
            raise ConnectError(str(exc)) from None

    def _exchange(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        assert self.sock is not None  # noqa: S101 - connected
        self._check_aborted()  # an abort that shut down the socket before TLS wrapped it
        self.sock.settimeout(self._timeouts()[1])
        self._send_head()
        while True:
            status, reason, headers, version = self._read_head()
            if status >= 200 or status == 101:
                break
        connection = b",".join(v for k, v in headers if k.lower() == b"connection").lower()
        self.reusable = version == b"HTTP/1.1" and b"close" not in connection
        self._frame(status, headers)
        return status, reason, headers

    def _connect(self, host: str, port: int, timeout: float | None) -> None:
        error: OSError | None = None
        # an ASCII name as bytes: a str goes through the "idna" codec, whose first use
        # imports it (with stringprep and unicodedata) on a pull's first connection
        name: str | bytes = host.encode("ascii") if host.isascii() else host
        for family, kind, proto, _, address in socket.getaddrinfo(
            name, port, type=socket.SOCK_STREAM
        ):
            self._check_aborted()
            sock = socket.socket(family, kind, proto)
            self.sock = sock
            self._check_aborted()  # an abort that came before the socket was there
            try:
                sock.settimeout(timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.connect(address)
            except OSError as exc:
                self.sock = None
                sock.close()
                error = exc
                continue
            return
        raise error or OSError(f"cannot resolve {host}")

    def _check_aborted(self) -> None:
        if self.aborted:
            raise _AbortedError

    def _send_head(self) -> None:
        request = self.request
        lines = [request.method.encode("ascii") + b" " + request.url.raw_path + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in request.headers.raw]
        data = b"\r\n".join(lines) + b"\r\n\r\n"
        try:
            assert self.sock is not None  # noqa: S101 - connected
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise WriteTimeout(str(exc) or "write timed out") from None
        except OSError as exc:
            self._check_aborted()
            raise WriteError(str(exc)) from None

    def _recv_more(self) -> bool:
        """Append what the socket has to ``pending``; ``False`` at the end of the stream."""
        buf = memoryview(bytearray(_MAX_HEAD))
        n = self._recv_into(buf)
        self.pending += buf[:n]
        return n > 0

    def _take_until(self, mark: bytes, what: str, closed: str) -> bytes:
        """The pending bytes up to ``mark`` (read as needed), consumed with it."""
        while (end := self.pending.find(mark)) < 0:
            if len(self.pending) > _MAX_HEAD:
                msg = f"{what} too large"
                raise RemoteProtocolError(msg)
            if not self._recv_more():
                raise RemoteProtocolError(closed)
        data = bytes(self.pending[:end])
        del self.pending[: end + len(mark)]
        return data

    def _read_head(self) -> tuple[int, bytes, list[tuple[bytes, bytes]], bytes]:
        closed = "server disconnected without sending a response"
        head = self._take_until(b"\r\n\r\n", "response head", closed)
        status_line, *lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            msg = f"malformed status line {status_line[:100]!r}"
            raise RemoteProtocolError(msg)
        headers = []
        for line in lines:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                msg = f"malformed header line {line[:100]!r}"
                raise RemoteProtocolError(msg)
            headers.append((name, value.strip()))
        return int(parts[1]), parts[2] if len(parts) > 2 else b"", headers, parts[0]

    def _frame(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if status in _NO_BODY or self.request.method == "HEAD":
            self.done = True
            return
        lengths = {v for k, v in headers if k.lower() == b"content-length"}
        codings = b",".join(v for k, v in headers if k.lower() == b"transfer-encoding").lower()
        if codings:
            if codings.rsplit(b",", 1)[-1].strip() != b"chunked":
                msg = f"unsupported transfer encoding {codings!r}"
                raise RemoteProtocolError(msg)
            self.framing = "chunked"
            self.remaining = -1  # a size line comes first
            return
        if lengths:
            if len(lengths) > 1 or not next(iter(lengths)).isdigit():
                msg = f"bad Content-Length {sorted(lengths)!r}"
                raise RemoteProtocolError(msg)
            self.framing = "length"
            self.remaining = int(next(iter(lengths)))
            self.done = self.remaining == 0
        else:
            self.reusable = False  # the body ends when the server closes

    def read_into(self, view: memoryview) -> int:
        """Body bytes into ``view`` (at least one); ``0`` at the end of the body."""
        while not self.done:
            if self.framing == "chunked" and self.remaining <= 0:
                self._chunk_boundary()
                continue
            limit = len(view) if self.framing == "eof" else min(len(view), self.remaining)
            if self.pending:
                n = min(limit, len(self.pending))
                view[:n] = self.pending[:n]
                del self.pending[:n]
            else:
                n = self._recv_into(view[:limit])
            if n == 0:
                if self.framing == "eof":
                    self.done = True
                    return 0
                raise RemoteProtocolError(_INCOMPLETE)
            if self.framing != "eof":
                self.remaining -= n
                if self.framing == "length" and self.remaining == 0:
                    self.done = True
            return n
        return 0

    def _recv_into(self, view: memoryview) -> int:
        assert self.sock is not None  # noqa: S101 - connected
        try:
            n = self.sock.recv_into(view)
        except TimeoutError as exc:
            raise ReadTimeout(str(exc) or "read timed out") from None
        except OSError as exc:
            self._check_aborted()
            raise ReadError(str(exc)) from None
        self._check_aborted()
        return n

    def _line(self) -> bytes:
        return self._take_until(b"\r\n", "chunk header", _INCOMPLETE)

    def _chunk_boundary(self) -> None:
        if self.remaining == 0 and self._line():  # the CRLF after a chunk's data
            msg = "chunk data not followed by CRLF"
            raise RemoteProtocolError(msg)
        size = self._line().split(b";", 1)[0].strip()
        try:
            self.remaining = int(size, 16)
        except ValueError:
            msg = f"bad chunk size {size[:20]!r}"
            raise RemoteProtocolError(msg) from None
        if self.remaining == 0:
            trailers = 0
            while line := self._line():  # trailers: read, ignored, bounded as a head is
                trailers += len(line) + 2
                if trailers > _MAX_HEAD:
                    msg = "chunk trailers too large"
                    raise RemoteProtocolError(msg)
            self.done = True


class _Workers:
    """Daemon threads for direct reads, started when none is idle and kept for the next."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self.busy = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self.busy += 1
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._jobs.put(job)
        if spawn:
            threading.Thread(target=self._work, name="blob-download", daemon=True).start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            job()

    def done(self) -> None:
        """Called by a job as its last step."""
        with self._lock:
            self.busy -= 1
            self._idle += 1


_WORKERS: Final = _Workers()


def busy() -> int:
    """How many direct reads (connect, head or body) run in threads now."""
    return _WORKERS.busy


async def _in_thread(fn: Callable[[], T], conn: _Connection) -> T:
    """``fn()`` in a worker thread; a cancelled caller aborts ``conn`` and waits for ``fn``."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            outcome: tuple[T | None, BaseException | None] = (None, exc)
        else:
            outcome = (result, None)
        _WORKERS.done()
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle, *outcome)

    _WORKERS.submit(run)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        conn.abort()
        with contextlib.suppress(Exception):
            await finish_shielded(asyncio.wait([future]))
        if future.done() and not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller sees
        raise


class DirectBody:
    """The body of a direct response: drained into a sink, or iterated."""

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def drain(self, sink: Callable[[memoryview], None]) -> None:
        """Read the whole body in one thread, calling ``sink`` there with each piece.

        ``sink`` runs in the worker thread and may raise to stop the transfer
        (its exception is raised here). A piece is only valid during the call.

        Raises:
            TransportError: the connection broke, stalled or misbehaved.
        """
        conn = self._conn

        def run() -> None:
            view = memoryview(bytearray(BUFFER))
            while n := conn.read_into(view):
                sink(view[:n])

        await _in_thread(run, conn)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        view = memoryview(bytearray(BUFFER))

        def one() -> bytes:
            return bytes(view[: conn.read_into(view)])

        while chunk := await _in_thread(one, conn):
            yield chunk

    async def aclose(self) -> None:
        self._conn.close()


class DirectTransport:
    """Serves ``GET`` and ``HEAD`` requests without a body, each on a pooled connection.

    Args:
        context: the TLS context of ``https://`` requests (called when first needed).
    """

    def __init__(self, context: Callable[[], ssl.SSLContext]) -> None:
        self._context = context
        self._pool = _Pool()

    async def send(self, request: Request) -> Response:
        """Send ``request`` and read the response head; the body is read on demand.

        Raises:
            TransportError: the connection failed, broke or misbehaved.
        """
        conn = _Connection(request, self._context, self._pool)
        try:
            status, reason, headers = await _in_thread(conn.open, conn)
        except BaseException:
            conn.close()
            raise
        body = DirectBody(conn)
        return Response(
            status,
            request=request,
            headers=Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers),
            reason_phrase=reason.decode("latin-1"),
            body=body,
            extensions={DIRECT: body},
        )

    def close(self) -> None:
        """Close the idle connections; none are kept from now on."""
        self._pool.close()
