"""The registry client: reads on direct connections, everything else through ``httpx``.

A pull only reads: ``HEAD`` and ``GET`` requests without a body, a token
``GET`` included. :class:`Client` serves those on :mod:`._direct`'s blocking
connections and follows their redirects itself, so a process that only pulls
never imports ``httpx`` (with its models, cookie jar and ``urllib.request``:
about 40 ms of CPU on a fresh daemon's first pull, and some MiB resident).
A request with a body (an upload), and every request when the environment
names a proxy, goes through an ``httpx`` client made on first use
(:mod:`._fallback`); its answer is handed back as an :class:`._http.Response`
and its errors as :mod:`._http`'s.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final
from urllib.parse import urlencode

from pycontainerd.remotes._direct import DirectTransport
from pycontainerd.remotes._http import (
    DEFAULT_PORTS,
    URL,
    Headers,
    Request,
    Response,
    TooManyRedirects,
    UnsupportedProtocol,
)

if TYPE_CHECKING:
    import ssl
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from pycontainerd.remotes._fallback import Fallback

#: Redirects followed per request, as ``httpx``'s default.
MAX_REDIRECTS: Final = 20
_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
_READS: Final = frozenset({"GET", "HEAD"})


def environment_proxies() -> bool:
    """Whether the environment names a proxy (``*_proxy``, any case, not empty).

    What ``urllib.request.getproxies()`` finds on Linux, without importing it,
    less ``no_proxy``: exceptions alone name no proxy to go through.
    """
    return any(
        key.endswith("_proxy") and key != "no_proxy" and value
        for key, value in ((k.lower(), v) for k, v in os.environ.items())
    )


class Client:
    """Requests to registries with one TLS setting; see the module docstring.

    Args:
        context: the TLS context of ``https://`` requests (called when first needed).
        connect_timeout: seconds to establish a connection.
        read_timeout: seconds without progress on a connection.
        user_agent: the ``User-Agent`` of every request.
        on_request: called with each request (redirects too) and its body
            (``b""`` unless bytes), before it goes out.
        on_response: called with each response once its head has arrived.
    """

    def __init__(
        self,
        context: Callable[[], ssl.SSLContext],
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        user_agent: str,
        on_request: Callable[[Request, bytes], Awaitable[None]] | None = None,
        on_response: Callable[[Response], Awaitable[None]] | None = None,
    ) -> None:
        self._context = context
        self._timeout = (connect_timeout, read_timeout)
        self._defaults = Headers(
            [
                ("Accept", "*/*"),
                ("Accept-Encoding", "gzip, deflate"),
                ("Connection", "keep-alive"),
                ("User-Agent", user_agent),
            ]
        )
        self.on_request = on_request
        self.on_response = on_response
        self.proxied = environment_proxies()
        self._direct = DirectTransport(context)
        self._fallback: Fallback | None = None

    def build_request(self, method: str, url: URL, headers: Sequence[tuple[str, str]]) -> Request:
        """A request with ``Host`` first, then the defaults not in ``headers``, then ``headers``."""
        given = Headers(headers)
        names = {k.lower() for k, _ in headers}
        defaults = [(k, v) for k, v in self._defaults.multi_items() if k.lower() not in names]
        merged = Headers([("Host", url.netloc), *defaults, *given.without("host").multi_items()])
        return Request(method, url, merged, self._timeout)

    async def send(
        self,
        method: str,
        url: URL,
        *,
        headers: Sequence[tuple[str, str]] = (),
        content: bytes | AsyncIterator[bytes] | None = None,
    ) -> Response:
        """Send a request, following redirects; the caller reads and closes the answer.

        Raises:
            TransportError: the connection failed or broke (``ConnectError``:
                none could be made).
            TooManyRedirects: more than :data:`MAX_REDIRECTS`.
        """
        if url.scheme not in DEFAULT_PORTS:
            msg = f"{url}: only http and https URLs can be requested"
            raise UnsupportedProtocol(msg)
        if method in _READS and content is None and not self.proxied:
            return await self._read(self.build_request(method, url, headers))
        return await self._through_httpx(method, url, headers, content)

    async def get(
        self, url: str, *, params: Sequence[tuple[str, str]] = (), headers: dict[str, str]
    ) -> Response:
        """``GET url`` with ``params`` added to its query; the answer read whole."""
        target = URL(url)
        if params:
            query = urlencode(list(params))
            target = URL(f"{url}{'&' if target.query else '?'}{query}")
        resp = await self.send("GET", target, headers=list(headers.items()))
        try:
            await resp.aread()
        finally:
            await resp.aclose()
        return resp

    async def _read(self, request: Request) -> Response:
        for _ in range(MAX_REDIRECTS + 1):
            if self.on_request is not None:
                await self.on_request(request, b"")
            resp = await self._direct.send(request)
            if self.on_response is not None:
                await self.on_response(resp)
            location = resp.headers.get("location")
            if resp.status_code not in _REDIRECTS or location is None:
                return resp
            await resp.aclose()
            request = self._redirected(request, resp.status_code, location)
        msg = f"{request.method} {request.url}: more than {MAX_REDIRECTS} redirects"
        raise TooManyRedirects(msg)

    def _redirected(self, request: Request, status: int, location: str) -> Request:
        """The request a redirect asks for: ``httpx``'s rules for a request without a body."""
        url = request.url.join(location)
        if url.scheme not in DEFAULT_PORTS:
            msg = f"{request.url} redirected to {url}, which is not http or https"
            raise UnsupportedProtocol(msg)
        method = "GET" if status == 303 and request.method != "HEAD" else request.method
        headers = request.headers.without("host")
        if url.origin != request.url.origin and not _upgrade(request.url, url):
            headers = headers.without("authorization")  # credentials stay with their server
        return self.build_request(method, url, headers.multi_items())

    async def _through_httpx(
        self,
        method: str,
        url: URL,
        headers: Sequence[tuple[str, str]],
        content: bytes | AsyncIterator[bytes] | None,
    ) -> Response:
        if self._fallback is None:
            from pycontainerd.remotes._fallback import Fallback

            self._fallback = Fallback(
                self._context,
                timeout=self._timeout,
                user_agent=self._defaults.get("user-agent", ""),
                proxied=self.proxied,
                on_request=self.on_request,
                on_response=self.on_response,
            )
        return await self._fallback.send(method, url, headers, content)

    async def aclose(self) -> None:
        """Close every connection."""
        self._direct.close()
        if self._fallback is not None:
            await self._fallback.aclose()


def _upgrade(old: URL, new: URL) -> bool:
    """``http://h`` to ``https://h`` on the default ports: the same server, now with TLS."""
    return (
        old.scheme == "http"
        and new.scheme == "https"
        and old.host == new.host
        and old.port is None
        and new.port is None
    )
