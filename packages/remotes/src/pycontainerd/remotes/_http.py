"""The registry client's HTTP vocabulary: URLs, headers, requests, responses, errors.

:class:`._client.Client` sends requests; these are its types, shared by the
transports behind it (:mod:`._direct`, and :mod:`._fallback` on ``httpx``).

The exception classes mirror ``httpx``'s names and hierarchy, so the
resolver's retry rules read the same: a :class:`ConnectError` moves on to the
next server, any other :class:`TransportError` is retried, and a timeout is a
``TransportError`` but not a ``ConnectError``.
"""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any, Final, Protocol, overload
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Iterator, Sequence

#: Most bytes a decoding step produces at a time.
PIECE: Final = 1 << 20
#: What :meth:`Response.aread` takes at most by default: answers read whole
#: (tokens, errors, upload replies) are small.
MAX_READ: Final = 4 << 20
#: The default port of each scheme a request may use.
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: What a path may hold unquoted (RFC 3986 ``pchar`` and ``/``; ``%`` keeps escapes).
_PATH_SAFE: Final = "/%:@!$&'()*+,;=-._~"
#: What a query may hold unquoted (``pchar``, ``/`` and ``?``).
_QUERY_SAFE: Final = _PATH_SAFE + "?"


# -- errors -----------------------------------------------------------------------------


class HTTPError(Exception):
    """A request did not get an answer that could be read."""


class InvalidURL(HTTPError, ValueError):  # noqa: N818 - httpx's name
    """A URL that cannot be requested (no host, a bad port)."""


class TooManyRedirects(HTTPError):  # noqa: N818 - httpx's name
    """More than :data:`MAX_REDIRECTS` redirects."""


class DecodingError(HTTPError):
    """A ``Content-Encoding`` that is unknown or does not decode."""


class TooLarge(HTTPError):  # noqa: N818 - as the others
    """A body read whole is larger than its limit."""


class TransportError(HTTPError):
    """The connection failed, stalled or carried something that is not HTTP/1.1."""


class TimeoutException(TransportError):  # noqa: N818 - httpx's name
    """No progress within the timeout."""


class ConnectTimeout(TimeoutException):
    """Connecting took longer than the connect timeout."""


class ReadTimeout(TimeoutException):
    """The server sent nothing for longer than the read timeout."""


class WriteTimeout(TimeoutException):
    """The server took nothing for longer than the read timeout."""


class NetworkError(TransportError):
    """The connection failed."""


class ConnectError(NetworkError):
    """No connection could be made (refused, unreachable, a TLS handshake failed)."""


class ReadError(NetworkError):
    """Reading broke off."""


class WriteError(NetworkError):
    """Writing broke off."""


class RemoteProtocolError(TransportError):
    """The server broke HTTP/1.1 (a malformed head, a body that ends early)."""


class UnsupportedProtocol(TransportError):  # noqa: N818 - httpx's name
    """A URL whose scheme is neither ``http`` nor ``https``."""


# -- URLs and headers -------------------------------------------------------------------


class URL:
    """An absolute ``http(s)`` URL: its parts, and the few derivations the resolver needs.

    The host is lowercase and without brackets (as a socket wants it); a
    default port is dropped. The path and the query are kept as given, with
    characters they may not hold (spaces, non-ASCII) percent-encoded.
    """

    __slots__ = ("host", "path", "port", "query", "scheme")

    def __init__(self, url: str) -> None:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            msg = f"invalid URL {url!r}: {exc}"
            raise InvalidURL(msg) from None
        self.scheme = parts.scheme.lower()
        self.host = parts.hostname or ""
        self.port = None if port == DEFAULT_PORTS.get(self.scheme) else port
        self.path = quote(parts.path, safe=_PATH_SAFE) or "/"
        self.query = quote(parts.query, safe=_QUERY_SAFE)

    @property
    def netloc(self) -> str:
        """``host[:port]``, an IPv6 address in brackets (the ``Host`` header's value)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def raw_path(self) -> bytes:
        """The request target: the path and the query."""
        target = self.path + ("?" + self.query if self.query else "")
        return target.encode("ascii", "strict")

    @property
    def origin(self) -> tuple[str, str, int]:
        """``(scheme, host, port)``, the port filled in."""
        return self.scheme, self.host, self.port or DEFAULT_PORTS.get(self.scheme, 0)

    def copy_with(self, *, scheme: str) -> URL:
        """The same URL with another scheme (its explicit port kept)."""
        return URL(f"{scheme}://{self.netloc}{self.raw_path.decode()}")

    def copy_merge_params(self, params: dict[str, str]) -> URL:
        """The URL with ``params`` in its query, replacing parameters of the same name."""
        kept = [(k, v) for k, v in parse_qsl(self.query, keep_blank_values=True) if k not in params]
        query = urlencode([*kept, *params.items()])
        return URL(f"{self.scheme}://{self.netloc}{self.path}?{query}")

    def join(self, location: str) -> URL:
        """``location`` (absolute, or relative to this URL), as a redirect's is read."""
        return URL(urljoin(str(self), location))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.raw_path.decode()}"

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, URL) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


class Headers:
    """HTTP headers in order, names matched without regard to case; a name may repeat."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items = list(items)

    @overload
    def get(self, name: str) -> str | None: ...

    @overload
    def get(self, name: str, default: str) -> str: ...

    def get(self, name: str, default: str | None = None) -> str | None:
        """The values of ``name`` joined by ``", "``, or ``default`` when there are none."""
        values = self.get_list(name)
        return ", ".join(values) if values else default

    def get_list(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        low = name.lower()
        return [v for k, v in self._items if k.lower() == low]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(k.lower() == name.lower() for k, _ in self._items)

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def multi_items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)``, in order."""
        return list(self._items)

    def without(self, *names: str) -> Headers:
        """These headers less every one named (any case)."""
        drop = {n.lower() for n in names}
        return Headers((k, v) for k, v in self._items if k.lower() not in drop)

    @property
    def raw(self) -> list[tuple[bytes, bytes]]:
        """``(name, value)`` as bytes, as they go on the wire."""
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._items]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


# -- requests and responses ---------------------------------------------------------------


class Request:
    """One request: method, URL, headers (``Host`` first) and timeouts.

    Attributes:
        timeout: ``(connect, read)`` in seconds; ``None`` waits for ever.
    """

    __slots__ = ("headers", "method", "timeout", "url")

    def __init__(
        self,
        method: str,
        url: URL,
        headers: Headers,
        timeout: tuple[float | None, float | None] = (None, None),
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.timeout = timeout


class Body(Protocol):
    """A response body: its pieces as they arrive, and a way to let the connection go."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Response:
    """A response whose head has arrived; its body is read on demand.

    Args:
        body: the (still encoded, unless ``decoded``) body; ``None`` for none.
        decoded: ``body`` yields decoded bytes already (an ``httpx`` answer).
        extensions: transport details, e.g. :data:`._direct.DIRECT`.
    """

    def __init__(
        self,
        status_code: int,
        *,
        request: Request,
        headers: Headers,
        reason_phrase: str = "",
        body: Body | None = None,
        decoded: bool = False,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        self.status_code = status_code
        self.reason_phrase = reason_phrase
        self.headers = headers
        self.request = request
        self.extensions = extensions or {}
        self._body = body
        self._decoded = decoded
        self._content: bytes | None = None if body is not None else b""
        self.is_stream_consumed = body is None

    @property
    def url(self) -> URL:
        """The URL that was answered (after redirects)."""
        return self.request.url

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes, ``Content-Encoding`` undone, as they arrive (once).

        Raises:
            TransportError: the connection broke.
            DecodingError: the encoding is unknown or the bytes do not decode.
        """
        if self._content is not None:
            if self._content:
                yield self._content
            return
        if self.is_stream_consumed or self._body is None:
            msg = "the response body was read already"
            raise RuntimeError(msg)
        self.is_stream_consumed = True
        stages = [] if self._decoded else _decoders(self.headers.get("content-encoding", ""))
        async for chunk in self._body:
            for piece in _through(stages, chunk):
                yield piece
        for piece in _ends(stages):
            yield piece

    async def aread(self, limit: int = MAX_READ) -> bytes:
        """The whole body (read once, then kept).

        Raises:
            TooLarge: it is larger than ``limit`` bytes (decoded).
            TransportError, DecodingError: as :meth:`aiter_bytes`.
        """
        if self._content is None:
            buf = bytearray()
            async for chunk in self.aiter_bytes():
                buf += chunk
                if len(buf) > limit:
                    msg = f"{self.request.method} {self.url}: answer larger than {limit} bytes"
                    raise TooLarge(msg)
            self._content = bytes(buf)
        return self._content

    @property
    def content(self) -> bytes:
        """The body :meth:`aread` read (``b""`` before)."""
        return self._content or b""

    @property
    def text(self) -> str:
        """:attr:`content` as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """:attr:`content` parsed as JSON.

        Raises:
            ValueError: it is not JSON.
        """
        return json.loads(self.content)

    async def aclose(self) -> None:
        """Let the connection go (back to the pool when the body was read to its end)."""
        if self._body is not None:
            await self._body.aclose()


def _decoders(encoding: str) -> list[_Stage]:
    """One stage per ``Content-Encoding`` step, in decoding order."""
    out = []
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            msg = f"unsupported Content-Encoding {coding!r}"
            raise DecodingError(msg)
        out.append(_Stage(coding))
    return out


class _Stage:
    """One decoding step, whose output comes in pieces of at most :data:`PIECE` bytes.

    A body of a few KiB may inflate to GiBs (a "zip bomb"): no step ever
    produces more than a piece at a time, so a reader that stops at a limit
    (a manifest's size) holds no more than that.
    """

    def __init__(self, coding: str) -> None:
        self._inflater: Any = None
        self._head = b""
        self._fed = False  # an empty body (a HEAD's, a 204) has nothing to decode
        if coding != "deflate":
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The output for ``data``, piece by piece."""
        self._fed = self._fed or bool(data)
        if self._inflater is None:
            # deflate: zlib-wrapped as the RFC says, or raw as some servers send it;
            # the first two bytes tell (a zlib header is a multiple of 31, method 8)
            self._head += data
            if len(self._head) < 2:
                return
            cmf, flg = self._head[0], self._head[1]
            wrapped = cmf & 0x0F == 8 and (cmf << 8 | flg) % 31 == 0
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if wrapped else -zlib.MAX_WBITS)
            data, self._head = self._head, b""
        try:
            while True:
                out = self._inflater.decompress(data, PIECE)
                data = self._inflater.unconsumed_tail
                if out:
                    yield out
                if not data and len(out) < PIECE:
                    return
        except zlib.error as exc:
            msg = f"the body does not decode: {exc}"
            raise DecodingError(msg) from None

    def end(self) -> Iterator[bytes]:
        """What is left at the end of the body (nothing, unless it was cut short)."""
        if not self._fed:
            return
        if self._inflater is None:  # fed, but too little to tell the kind of deflate
            msg = "the body does not decode: it ends after one byte"
            raise DecodingError(msg)
        yield from self.feed(b"")
        if not self._inflater.eof:
            msg = "the body does not decode: the compressed stream is cut short"
            raise DecodingError(msg)


def _through(stages: Sequence[_Stage], data: bytes) -> Iterator[bytes]:
    """``data`` through each of ``stages`` in turn, piece by piece."""
    if not stages:
        if data:
            yield data
        return
    for piece in stages[0].feed(data):
        yield from _through(stages[1:], piece)


def _ends(stages: Sequence[_Stage]) -> Iterator[bytes]:
    """The ends of ``stages``, each through the stages after it."""
    for i, stage in enumerate(stages):
        for piece in stage.end():
            yield from _through(stages[i + 1 :], piece)
