"""The ``context`` of a handler served by :mod:`pycontainerd.api.h2grpc`: grpc.aio's surface."""

from __future__ import annotations

import base64
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import grpc.aio

from pycontainerd.api.h2hpack import literal as _literal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["ServicerContext"]

log = logging.getLogger("pycontainerd.api.h2grpc")


class _Limits(Protocol):
    max_send: int


class _Connection(Protocol):
    @property
    def server(self) -> _Limits: ...

    async def send_data(self, stream: Any, payload: bytes) -> None: ...


class _Stream(Protocol):
    """What a context needs of the server's stream (``h2grpc._Stream`` has this shape).

    A protocol, so that this module does not import the server that imports it.
    """

    metadata: tuple[tuple[str, str | bytes], ...]
    deadline: float | None
    headers_sent: bool
    closed: bool
    cancelled: bool

    @property
    def conn(self) -> _Connection: ...

    def send_headers(self, extra: bytes = b"") -> None: ...

    async def send_message(self, data: bytes) -> None: ...

    async def next_request(self) -> Any: ...


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


class _CallError(Exception):
    """Ends a call with ``code`` and ``details`` (raised inside the server, never to handlers)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


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
