"""Requests that :mod:`._direct` does not serve, on an ``httpx`` client.

:class:`._client.Client` imports this module for its first request with a body
(an upload, a mount, a manifest ``PUT``) and, when the environment names a
proxy, for its first request of any kind: ``httpx`` then finds the proxy the
way it always does. The answer is handed back as an :class:`._http.Response`
(already decoded) and ``httpx``'s errors as :mod:`._http`'s, so the resolver
sees one kind of either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import httpx

from pycontainerd.remotes import _http

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

#: Bytes httpcore asks the socket stream for per read (its default: 64 KiB).
READ_SIZE: Final = 1 << 20

#: ``httpx``'s errors and ours, the more specific first.
_ERRORS: Final[tuple[tuple[type[Exception], type[_http.HTTPError]], ...]] = (
    (httpx.ConnectTimeout, _http.ConnectTimeout),
    (httpx.ReadTimeout, _http.ReadTimeout),
    (httpx.WriteTimeout, _http.WriteTimeout),
    (httpx.TimeoutException, _http.TimeoutException),
    (httpx.ConnectError, _http.ConnectError),
    (httpx.ReadError, _http.ReadError),
    (httpx.WriteError, _http.WriteError),
    (httpx.RemoteProtocolError, _http.RemoteProtocolError),
    (httpx.UnsupportedProtocol, _http.UnsupportedProtocol),
    (httpx.TransportError, _http.TransportError),
    (httpx.TooManyRedirects, _http.TooManyRedirects),
    (httpx.DecodingError, _http.DecodingError),
    (httpx.InvalidURL, _http.InvalidURL),
)


def larger_reads() -> None:
    """Let httpcore's HTTP/1.1 connections read up to :data:`READ_SIZE` at a time.

    A body that comes through a proxy then passes through httpcore, h11 and
    httpx in chunks as large as the socket delivers (up to 256 KiB from
    asyncio) instead of 64 KiB slices: about a third less CPU for the bytes.
    httpcore has no option for it; the class attribute is the knob
    (process-wide, only ever raised).
    """
    from httpcore._async import http11

    conn = http11.AsyncHTTP11Connection
    if getattr(conn, "READ_NUM_BYTES", READ_SIZE) < READ_SIZE:
        conn.READ_NUM_BYTES = READ_SIZE


def converted(exc: Exception) -> _http.HTTPError:
    """``httpx``'s error ``exc`` as the :mod:`._http` error of the same kind."""
    for theirs, ours in _ERRORS:
        if isinstance(exc, theirs):
            return ours(str(exc) or type(exc).__name__)
    return _http.HTTPError(str(exc) or type(exc).__name__)


class _LazyTLSTransport(httpx.AsyncBaseTransport):
    """``http://`` requests on a transport without TLS; ``https://`` on one made when needed.

    Building an SSL context with the system's roots costs tens of milliseconds
    of CPU (the CA bundle is parsed), which an upload to a plain-HTTP
    registry never needs.
    """

    def __init__(self, context: Callable[[], ssl.SSLContext]) -> None:
        self._context = context
        self._plain: httpx.AsyncHTTPTransport | None = None
        self._secure: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "http":
            if self._plain is None:
                # a context is required but never used: no request over it speaks TLS
                self._plain = httpx.AsyncHTTPTransport(verify=False)
            transport = self._plain
        else:
            if self._secure is None:
                self._secure = httpx.AsyncHTTPTransport(verify=self._context())
            transport = self._secure
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        for transport in (self._plain, self._secure):
            if transport is not None:
                await transport.aclose()


class _Body:
    """An ``httpx`` response's decoded body, its errors turned into ours."""

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise converted(exc) from None

    async def aclose(self) -> None:
        await self._resp.aclose()


def _request(request: httpx.Request) -> _http.Request:
    headers = _http.Headers(request.headers.multi_items())
    return _http.Request(request.method, _http.URL(str(request.url)), headers)


def _response(resp: httpx.Response, *, body: bool) -> _http.Response:
    return _http.Response(
        resp.status_code,
        request=_request(resp.request),
        headers=_http.Headers(resp.headers.multi_items()),
        reason_phrase=resp.reason_phrase,
        body=_Body(resp) if body else None,
        decoded=True,
    )


class Fallback:
    """The ``httpx`` client of one :class:`._client.Client`, with its settings and hooks.

    Args:
        context: the TLS context of ``https://`` requests (called when first needed).
        timeout: ``(connect, read)`` in seconds.
        user_agent: the ``User-Agent`` of every request.
        proxied: the environment names a proxy (``httpx`` finds it).
        on_request: as the client's, called with each request and its bytes body.
        on_response: as the client's, called with each response's head.
    """

    def __init__(
        self,
        context: Callable[[], ssl.SSLContext],
        *,
        timeout: tuple[float | None, float | None],
        user_agent: str,
        proxied: bool,
        on_request: Callable[[_http.Request, bytes], Awaitable[None]] | None,
        on_response: Callable[[_http.Response], Awaitable[None]] | None,
    ) -> None:
        self._on_request_hook = on_request
        self._on_response_hook = on_response
        connect, read = timeout
        options: dict[str, Any] = {
            "timeout": httpx.Timeout(read, connect=connect),
            "follow_redirects": True,
            "headers": {"User-Agent": user_agent},
            "event_hooks": {"request": [self._on_request], "response": [self._on_response]},
        }
        if proxied:
            # proxy transports take the client's TLS settings: build them now
            larger_reads()
            options["verify"] = context()
        else:
            options["transport"] = _LazyTLSTransport(context)
        self._client = httpx.AsyncClient(**options)

    async def _on_request(self, request: httpx.Request) -> None:
        if self._on_request_hook is not None:
            body = request.content if isinstance(request.stream, httpx.ByteStream) else b""
            await self._on_request_hook(_request(request), body)

    async def _on_response(self, resp: httpx.Response) -> None:
        if self._on_response_hook is not None:
            await self._on_response_hook(_response(resp, body=False))

    async def send(
        self,
        method: str,
        url: _http.URL,
        headers: Sequence[tuple[str, str]],
        content: bytes | AsyncIterator[bytes] | None,
    ) -> _http.Response:
        """Send through ``httpx`` (redirects followed); the caller reads and closes the answer."""
        try:
            request = self._client.build_request(
                method, str(url), headers=list(headers), content=content
            )
            resp = await self._client.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise converted(exc) from None
        return _response(resp, body=True)

    async def aclose(self) -> None:
        await self._client.aclose()
