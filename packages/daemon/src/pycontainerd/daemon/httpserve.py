"""A minimal asyncio HTTP/1.1 server for the debug and metrics endpoints.

Only ``GET`` (and ``HEAD``) of fixed paths; one request per connection. No
web framework: the daemon needs three read-only pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

log = logging.getLogger(__name__)

_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_MAX_HEADER: Final = 64 * 1024


class HttpServer:
    """Serves ``routes`` (exact paths) on a unix socket or a TCP address."""

    def __init__(
        self, routes: Mapping[str, Callable[[str], Awaitable[tuple[int, str, bytes]]]]
    ) -> None:
        self._routes = dict(routes)
        self._server: asyncio.Server | None = None

    async def start_unix(self, path: str) -> None:
        """Listen on the unix socket ``path`` (prepared by the caller)."""
        self._server = await asyncio.start_unix_server(self._handle, path=path)

    async def start_tcp(self, host: str, port: int) -> int:
        """Listen on ``host:port``; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(self._handle, host=host or None, port=port)
        sock = self._server.sockets[0]
        return int(sock.getsockname()[1])

    async def close(self) -> None:
        """Stop listening and wait for the listener to close."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _respond(
        self, writer: asyncio.StreamWriter, status: int, ctype: str, body: bytes, *, head: bool
    ) -> None:
        reason = _REASONS.get(status, "Error")
        header = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(header.encode("ascii") + (b"" if head else body))
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if len(raw) > _MAX_HEADER:
                return
            request_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) < 2:
                await self._respond(writer, 400, "text/plain", b"bad request\n", head=False)
                return
            method, target = parts[0], parts[1]
            if method not in ("GET", "HEAD"):
                await self._respond(writer, 405, "text/plain", b"method not allowed\n", head=False)
                return
            path, _, query = target.partition("?")
            handler = self._routes.get(path)
            if handler is None:
                await self._respond(writer, 404, "text/plain", b"404 page not found\n", head=False)
                return
            status, ctype, body = await handler(query)
            await self._respond(writer, status, ctype, body, head=method == "HEAD")
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("debug/metrics handler failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
