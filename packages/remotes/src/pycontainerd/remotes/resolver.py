"""A resolver, fetcher and pusher for the OCI distribution API over HTTP(S).

``Resolver.resolve(ref)`` asks each server that may resolve (mirrors first,
see :mod:`.hosts`) for ``HEAD <path>/<repo>/manifests/<tag|digest>`` and
returns the reference's root descriptor. ``Resolver.fetcher(ref)`` streams
blobs and manifests of that repository: every byte is hashed on the way, a
connection that drops or stalls is resumed with a ``Range`` request, and a
blob whose bytes do not match its digest raises ``DataLossError``.
``Resolver.pusher(ref)`` checks for, mounts and uploads blobs and puts
manifests.

Requests to a server other than the registry itself carry
``?ns=<registry host>``, as containerd does for mirrors. Authentication is
:class:`~.auth.Authorizer`'s; each TLS setting gets its own
:class:`~._client.Client` (reads on :mod:`._direct`'s connections, uploads
through ``httpx``). Server errors (5xx) and broken connections are retried with
exponential back-off; a refused connection moves on to the next server at
once (a mirror that is down). At most ``max_concurrent`` blobs are fetched at
the same time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from typing import TYPE_CHECKING, Final

from pycontainerd.core import digests
from pycontainerd.core.closing import AsyncClosing, finish_shielded
from pycontainerd.core.content import gather_chunks
from pycontainerd.core.errdefs import (
    ContainerdError,
    DataLossError,
    FailedPreconditionError,
    NotFoundError,
    OutOfRangeError,
    UnauthenticatedError,
    UnavailableError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.types import Descriptor
from pycontainerd.remotes import _client, _http, mediatypes, reference
from pycontainerd.remotes._direct import DIRECT, DirectBody
from pycontainerd.remotes.auth import Authorizer, Credentials, scope
from pycontainerd.remotes.hosts import Capability, HostsConfig, RegistryHost

if TYPE_CHECKING:
    from collections.abc import (
        AsyncGenerator,
        AsyncIterator,
        Awaitable,
        Callable,
        Iterable,
        Sequence,
    )

    from pycontainerd.remotes.hosts import TLSOptions

log = logging.getLogger(__name__)

USER_AGENT: Final = "pycontainerd/0.1"
CHUNK: Final = 1 << 20


class _HostFailedError(Exception):
    """This server cannot serve the request: try the next one."""


def _is_plain_http_answer(exc: _http.ConnectError) -> bool:
    text = str(exc)
    return (
        "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "wrong version" in text
    )


class Resolver(AsyncClosing):
    """Talks to registries; see the module docstring.

    Args:
        hosts: the server list for a registry host; default: ``HostsConfig()``
            (the registry itself over HTTPS).
        credentials: ``host -> (username, secret)`` or ``None`` (anonymous).
        max_concurrent: blobs fetched at the same time.
        retries: further attempts after a server error or a broken transfer.
        backoff: first back-off delay in seconds (doubles each attempt).
        connect_timeout: seconds to establish a connection.
        read_timeout: seconds without data before a transfer counts as stalled.
        http_dump: receives a dump of every request and response (request
            line, headers and a request body that is bytes; status line and
            headers), as containerd's ``httpdbg.DumpRequests``; the
            ``Authorization`` value is left out. ``None``: no dumps.
    """

    def __init__(
        self,
        hosts: HostsConfig | Callable[[str], list[RegistryHost]] | None = None,
        *,
        credentials: Credentials | None = None,
        max_concurrent: int = 3,
        retries: int = 3,
        backoff: float = 0.2,
        connect_timeout: float = 30.0,
        read_timeout: float = 30.0,
        http_dump: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        config = hosts if hosts is not None else HostsConfig()
        self._hosts = config.hosts if isinstance(config, HostsConfig) else config
        self.authorizer = Authorizer(credentials)
        self.retries = retries
        self.backoff = backoff
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self.max_concurrent = max(1, max_concurrent)
        self.limit = asyncio.Semaphore(self.max_concurrent)
        self._clients: dict[TLSOptions, _client.Client] = {}
        self._plain: set[str] = set()
        self._http_dump = http_dump

    async def aclose(self) -> None:
        """Close every HTTP connection."""
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    # -- plumbing ----------------------------------------------------------------

    def hosts(self, registry: str, cap: Capability) -> list[RegistryHost]:
        """The servers for ``registry`` that have ``cap``, in order."""
        return [h for h in self._hosts(registry) if cap in h.capabilities]

    def _client(self, host: RegistryHost) -> _client.Client:
        client = self._clients.get(host.tls)
        if client is None:
            dumping = self._http_dump is not None
            client = _client.Client(
                # made on first use: building it with the system's roots costs tens of
                # milliseconds of CPU (the CA bundle is parsed), which a plain-HTTP pull
                # never needs
                functools.cache(host.tls.ssl_context),
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                user_agent=USER_AGENT,
                on_request=self._dump_request if dumping else None,
                on_response=self._dump_response if dumping else None,
            )
            self._clients[host.tls] = client
        return client

    async def _dump_request(self, request: _http.Request, body: bytes) -> None:
        assert self._http_dump is not None  # noqa: S101 - installed only with a dump
        target = request.url.raw_path.decode("ascii", "replace")
        lines = [f"{request.method} {target} HTTP/1.1", f"Host: {request.url.netloc}"]
        lines += _header_lines(request.headers, skip=("host",))
        await self._http_dump(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    async def _dump_response(self, response: _http.Response) -> None:
        assert self._http_dump is not None  # noqa: S101 - installed only with a dump
        status = f"HTTP/1.1 {response.status_code} {response.reason_phrase}"
        lines = [status, *_header_lines(response.headers)]
        await self._http_dump(("\r\n".join(lines) + "\r\n\r\n").encode())

    def url(self, host: RegistryHost, ref: reference.Reference, *parts: str) -> _http.URL:
        """``<server>/<repo>/<parts...>``, with ``?ns=`` when the server is a mirror."""
        scheme = "http" if host.host in self._plain else host.scheme
        url = _http.URL(f"{scheme}://{host.host}{host.path}/{ref.repository}/{'/'.join(parts)}")
        if host.host != ref.host:
            url = url.copy_merge_params({"ns": ref.host})
        return url

    async def send(  # noqa: PLR0912, PLR0915 - one loop: auth, retries, plain-HTTP fallback
        self,
        host: RegistryHost,
        method: str,
        url: _http.URL,
        *,
        scopes: Sequence[str],
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], AsyncIterator[bytes]] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> _http.Response:
        """One request with auth, retries on 5xx and broken connections, and HTTP fallback.

        The caller closes a streamed response. A ``GET`` or ``HEAD`` is read
        by a thread (see :mod:`._direct`), unless the client goes through a
        proxy; the response's ``extensions[DIRECT]`` is then its
        :class:`~._direct.DirectBody`, which a caller may drain.

        Raises:
            _http.ConnectError: the server cannot be reached.
            UnauthenticatedError: authentication failed.
            UnavailableError: the server kept failing.
        """
        client = self._client(host)
        attempt = 0
        auth: str | None = await self.authorizer.authorization(client, host.host, scopes)
        challenged = False
        while True:
            if host.host in self._plain and url.scheme == "https":
                url = url.copy_with(scheme="http")
            hdrs = [*host.headers, *(headers or {}).items()]
            if auth:
                hdrs.append(("Authorization", auth))
            content = body() if callable(body) else body
            try:
                resp = await client.send(method, url, headers=hdrs, content=content)
            except _http.ConnectError as exc:
                if host.http_fallback and url.scheme == "https" and _is_plain_http_answer(exc):
                    log.debug("%s does not speak TLS; using plain HTTP", host.host)
                    self._plain.add(host.host)
                    continue
                raise
            except _http.TransportError as exc:
                attempt += 1
                if not retry or attempt > self.retries:
                    msg = f"{method} {url}: {exc!r}"
                    raise UnavailableError(msg) from None
                await self.backoff_sleep(attempt)
                continue
            except _http.HTTPError as exc:  # too many redirects
                msg = f"{method} {url}: {exc}"
                raise UnavailableError(msg) from None
            if resp.status_code == 401 and not challenged:
                await resp.aclose()
                challenged = True
                auth = await self.authorizer.challenged(client, host.host, resp, scopes)
                continue
            if resp.status_code == 401:
                await resp.aclose()
                msg = f"{method} {url}: authorization failed (401 Unauthorized)"
                raise UnauthenticatedError(msg)
            if resp.status_code >= 500 and retry and attempt < self.retries:
                await resp.aclose()
                attempt += 1
                log.debug("%s %s: %d, retrying", method, url, resp.status_code)
                await self.backoff_sleep(attempt)
                continue
            if not stream:
                try:
                    await resp.aread()
                except _http.HTTPError as exc:
                    msg = f"{method} {url}: reading the answer: {exc}"
                    raise UnavailableError(msg) from None
                finally:
                    await resp.aclose()
            return resp

    async def backoff_sleep(self, attempt: int) -> None:
        delay = self.backoff * (2 ** (attempt - 1))
        await asyncio.sleep(delay * (0.75 + random.random() / 2))  # noqa: S311 - jitter

    # -- resolve -------------------------------------------------------------------

    async def resolve(self, ref: str) -> tuple[str, Descriptor]:
        """The canonical name and root descriptor of ``ref``.

        Raises:
            InvalidArgumentError: ``ref`` is malformed.
            NotFoundError: no server knows it.
            UnimplementedError: the root has a media type a pull cannot walk.
            OutOfRangeError: the manifest is larger than ``MAX_MANIFEST_SIZE``.
            UnauthenticatedError: access was refused.
            UnavailableError: every server failed.
        """
        parsed = reference.parse(ref)
        cap = Capability.RESOLVE | (Capability.PULL if parsed.digest else Capability(0))
        candidates = [h for h in self._hosts(parsed.host) if h.capabilities & cap]
        if not candidates:
            msg = f"{ref}: no server may resolve it (check capabilities in hosts.toml)"
            raise NotFoundError(msg)
        errors: list[str] = []
        auth_error: UnauthenticatedError | None = None
        for host in candidates:
            try:
                desc = await self._resolve_on(host, parsed)
            except _HostFailedError as exc:
                errors.append(str(exc))
                continue
            except UnauthenticatedError as exc:
                auth_error = exc
                errors.append(str(exc))
                continue
            if desc is None:
                continue
            mediatypes.check_root(desc.media_type, ref)
            return str(parsed), desc
        if auth_error is not None:
            raise auth_error
        if errors:
            msg = f"failed to resolve reference {go_quote(ref)}: {'; '.join(errors)}"
            raise UnavailableError(msg)
        msg = f"{ref}: not found"
        raise NotFoundError(msg)

    async def _resolve_on(self, host: RegistryHost, ref: reference.Reference) -> Descriptor | None:
        url = self.url(host, ref, "manifests", ref.object)
        accept = {"Accept": ", ".join(mediatypes.MANIFEST_ACCEPT)}
        scopes = [scope(ref.repository)]
        try:
            resp = await self.send(host, "HEAD", url, scopes=scopes, headers=accept)
        except (_http.ConnectError, UnavailableError) as exc:
            log.debug("resolve %s on %s failed: %s", ref, host.host, exc)
            msg = f"{host.host}: {exc}"
            raise _HostFailedError(msg) from None
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            msg = f"{host.host}: unexpected status {resp.status_code} {resp.reason_phrase}"
            raise _HostFailedError(msg)
        media_type = resp.headers.get("content-type", "")
        dgst = ref.digest or resp.headers.get("docker-content-digest", "")
        length = resp.headers.get("content-length", "")
        if media_type and dgst and length.isdigit() and int(length) > 0:
            size = int(length)
            _check_manifest_size(size, str(ref))
            return Descriptor(media_type=media_type, digest=digests.parse(dgst), size=size)
        # HEAD was not informative: read the manifest itself
        resp = await self.send(host, "GET", url, scopes=scopes, headers=accept, stream=True)
        try:
            if resp.status_code == 404:
                return None
            if resp.status_code != 200:
                msg = f"{host.host}: unexpected status {resp.status_code} {resp.reason_phrase}"
                raise _HostFailedError(msg)
            data = await _read_bounded(resp, str(ref))
        finally:
            await resp.aclose()
        actual = digests.digest_of(data)
        if ref.digest and actual != ref.digest:
            msg = f"{ref}: manifest digest mismatch: got {actual}"
            raise DataLossError(msg)
        return Descriptor(
            media_type=resp.headers.get("content-type", ""), digest=actual, size=len(data)
        )

    # -- fetch / push ----------------------------------------------------------------

    def fetcher(self, ref: str) -> Fetcher:
        """A fetcher for the repository of ``ref``."""
        return Fetcher(self, reference.parse(ref))

    def pusher(self, ref: str) -> Pusher:
        """A pusher for the repository of ``ref``."""
        return Pusher(self, reference.parse(ref))


def _check_manifest_size(size: int, what: str) -> None:
    if size > mediatypes.MAX_MANIFEST_SIZE:
        msg = (
            f"{what}: manifest size {size} exceeds the limit of "
            f"{mediatypes.MAX_MANIFEST_SIZE} bytes"
        )
        raise OutOfRangeError(msg)


async def _read_bounded(resp: _http.Response, what: str) -> bytes:
    length = resp.headers.get("content-length", "")
    if length.isdigit():
        _check_manifest_size(int(length), what)
    buf = bytearray()
    async for chunk in resp.aiter_bytes():
        buf += chunk
        _check_manifest_size(len(buf), what)
    return bytes(buf)


def _header_lines(headers: _http.Headers, skip: Sequence[str] = ()) -> list[str]:
    out = []
    for name, value in headers.multi_items():
        if name.lower() in skip:
            continue
        shown = "<hidden>" if name.lower() == "authorization" else value
        out.append(f"{name.title()}: {shown}")
    return out


class Fetcher:
    """Streams blobs and manifests of one repository (containerd's ``remotes.Fetcher``)."""

    def __init__(self, resolver: Resolver, ref: reference.Reference) -> None:
        self.resolver = resolver
        self.ref = ref

    async def fetch(
        self, desc: Descriptor, *, offset: int = 0, verify: bool = True
    ) -> AsyncGenerator[bytes, None]:
        """The bytes of ``desc`` from ``offset`` on, verified against its size and digest.

        A transfer that breaks or stalls is resumed where it stopped (``Range``)
        up to ``retries`` times. Use with ``contextlib.aclosing`` when the
        stream may be abandoned early. ``verify=False`` skips hashing (the size
        is still checked): for a caller that hashes the bytes itself anyway,
        such as a pull whose content writer does.

        Raises:
            NotFoundError: no server has the blob.
            DataLossError: the bytes do not match the descriptor's size or digest.
            OutOfRangeError: a manifest larger than ``MAX_MANIFEST_SIZE``.
            UnavailableError: every server failed or the transfer kept breaking.
        """
        stream = self._stream(desc, offset, verify=verify)
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                yield chunk

    async def fetch_into(
        self,
        desc: Descriptor,
        sink: Callable[[memoryview | bytes], None],
        *,
        offset: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Pass the bytes of ``desc`` from ``offset`` on to ``sink``, checking their size.

        ``sink`` runs in a worker thread, never in two at once, and must not
        keep the piece it is given beyond the call: a blob's body is read by
        one thread into a reused buffer and handed to ``sink`` there (see
        :mod:`._direct`), so hashing and writing it costs the event loop
        nothing. ``sink`` hashes the bytes itself if they are to be checked
        against the digest (as a content writer does). ``progress(offset)`` is
        called on the event loop about every MiB. Resumes, retries and
        errors are :meth:`fetch`'s.

        Raises:
            as :meth:`fetch`, and whatever ``sink`` raises.
        """
        stream = self._stream(desc, offset, verify=False, sink=sink, progress=progress)
        async with contextlib.aclosing(stream):
            async for _ in stream:
                pass

    async def _stream(
        self,
        desc: Descriptor,
        offset: int,
        *,
        verify: bool,
        sink: Callable[[memoryview | bytes], None] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[bytes, None]:
        is_manifest = mediatypes.is_manifest(desc.media_type) or mediatypes.is_index(
            desc.media_type
        )
        if is_manifest:
            _check_manifest_size(desc.size, desc.digest)
        endpoint = "manifests" if is_manifest else "blobs"
        hosts = self.resolver.hosts(self.ref.host, Capability.PULL)
        errors: list[str] = []
        async with self.resolver.limit:
            for host in hosts:
                stream = self._from_host(
                    host, endpoint, desc, offset, verify=verify, sink=sink, progress=progress
                )
                try:
                    async with contextlib.aclosing(stream):
                        async for chunk in stream:
                            yield chunk
                    return
                except _HostFailedError as exc:
                    errors.append(str(exc))
        if errors and not all(e.endswith("not found") for e in errors):
            msg = f"fetching {desc.digest} from {self.ref.locator}: {'; '.join(errors)}"
            raise UnavailableError(msg)
        msg = f"{desc.digest} in {self.ref.locator}: not found"
        raise NotFoundError(msg)

    async def _from_host(  # noqa: PLR0912, PLR0915 - one resumable transfer loop
        self,
        host: RegistryHost,
        endpoint: str,
        desc: Descriptor,
        offset: int,
        *,
        verify: bool,
        sink: Callable[[memoryview | bytes], None] | None,
        progress: Callable[[int], None] | None,
    ) -> AsyncGenerator[bytes, None]:
        resolver = self.resolver
        loop = asyncio.get_running_loop()
        url = resolver.url(host, self.ref, endpoint, desc.digest)
        scopes = [scope(self.ref.repository)]
        hasher = (
            digests.hasher(digests.parse(desc.digest).algorithm) if offset == 0 and verify else None
        )
        pos = offset
        reported = offset
        attempt = 0
        sent_any = False
        skip = 0

        def accept(piece: bytes | memoryview) -> bytes | memoryview:
            """What of ``piece`` is new (past a range the server ignored), size-checked."""
            nonlocal skip
            if skip:
                cut = min(skip, len(piece))
                piece = piece[cut:]
                skip -= cut
            if desc.size and pos + len(piece) > desc.size:
                msg = f"{desc.digest}: server sent more than the descriptor's {desc.size} bytes"
                raise DataLossError(msg)
            return piece

        def take(piece: bytes | memoryview) -> None:
            """Pass ``piece`` to ``sink`` (in a worker thread)."""
            nonlocal pos, sent_any, reported
            piece = accept(piece)
            if not piece:
                return
            assert sink is not None  # noqa: S101 - only called with a sink
            if hasher is not None:
                hasher.update(piece)
            sink(piece)
            pos += len(piece)
            sent_any = True
            if progress is not None and pos - reported >= CHUNK:
                reported = pos
                loop.call_soon_threadsafe(progress, pos)

        while True:
            headers = {"Accept": desc.media_type or "*/*"}
            if sink is not None:
                headers["Accept-Encoding"] = "identity"
            if pos > 0:
                headers["Range"] = f"bytes={pos}-"
            try:
                resp = await resolver.send(
                    host,
                    "GET",
                    url,
                    scopes=scopes,
                    headers=headers,
                    stream=True,
                )
            except (_http.ConnectError, UnavailableError) as exc:
                if not sent_any:
                    msg = f"{host.host}: {exc}"
                    raise _HostFailedError(msg) from None
                attempt += 1
                if attempt > resolver.retries:
                    raise self._broken(desc, pos, exc) from None
                await resolver.backoff_sleep(attempt)
                continue
            try:
                if resp.status_code == 404:
                    msg = f"{host.host}: {desc.digest}: not found"
                    raise _HostFailedError(msg)
                if resp.status_code not in (200, 206):
                    msg = f"{host.host}: unexpected status {resp.status_code} {resp.reason_phrase}"
                    raise _HostFailedError(msg)
                skip = pos if resp.status_code == 200 else 0
                if resp.status_code == 200 and pos > 0:
                    log.debug("%s ignored the range request; skipping %d bytes", host.host, pos)
                try:
                    if sink is None:
                        async for data in resp.aiter_bytes():
                            chunk = accept(data)
                            if not chunk:
                                continue
                            if hasher is not None:
                                hasher.update(chunk)
                            pos += len(chunk)
                            sent_any = True
                            yield bytes(chunk)
                    else:
                        await _drain(resp, take)
                        if progress is not None and pos != reported:
                            reported = pos
                            progress(pos)
                    if desc.size and pos < desc.size:
                        msg = f"short read: {pos} of {desc.size} bytes"
                        raise _http.ReadError(msg)
                except _http.TransportError as exc:
                    attempt += 1
                    if attempt > resolver.retries:
                        raise self._broken(desc, pos, exc) from None
                    log.debug("fetch %s broke at %d (%r); resuming", desc.digest, pos, exc)
                    await resolver.backoff_sleep(attempt)
                    continue
            finally:
                await resp.aclose()
            break
        if hasher is not None:
            actual = hasher.digest()
            if actual != desc.digest:
                msg = f"{desc.digest}: digest mismatch: the registry sent content with {actual}"
                raise DataLossError(msg)

    def _broken(self, desc: Descriptor, pos: int, exc: BaseException) -> UnavailableError:
        return UnavailableError(
            f"fetching {desc.digest} from {self.ref.locator} failed at byte {pos} of "
            f"{desc.size} after {self.resolver.retries + 1} attempts: {exc!r}"
        )

    async def fetch_bytes(self, desc: Descriptor) -> bytes:
        """The whole (small) blob ``desc``, e.g. a manifest or a config.

        Raises:
            OutOfRangeError: a manifest larger than ``MAX_MANIFEST_SIZE``.
            as ``fetch``.
        """
        buf = bytearray()
        async for chunk in self.fetch(desc):
            buf += chunk
        return bytes(buf)


async def _drain(resp: _http.Response, take: Callable[[bytes | memoryview], None]) -> None:
    """Hand the body of ``resp`` to ``take`` in worker threads.

    A direct response is read and handed over by one thread; any other
    (through a proxy, or content-encoded) is gathered from its decoded bytes into
    pieces of about :data:`CHUNK` bytes, each handed over in a thread.
    """
    body = resp.extensions.get(DIRECT)
    if isinstance(body, DirectBody) and "content-encoding" not in resp.headers:
        await body.drain(take)
        return
    async for block in gather_chunks(resp.aiter_bytes(), CHUNK):
        await finish_shielded(asyncio.to_thread(take, block))


class Pusher:
    """Uploads blobs and manifests to one repository (containerd's ``remotes.Pusher``).

    The first server with the ``push`` capability is used.
    """

    def __init__(self, resolver: Resolver, ref: reference.Reference) -> None:
        self.resolver = resolver
        self.ref = ref
        hosts = resolver.hosts(ref.host, Capability.PUSH)
        if not hosts:
            msg = f"{ref}: no server may be pushed to (check capabilities in hosts.toml)"
            raise NotFoundError(msg)
        self.host = hosts[0]
        self._scopes = [scope(ref.repository, "pull", "push")]

    async def _send(
        self,
        method: str,
        url: _http.URL,
        *,
        scopes: Iterable[str] = (),
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], AsyncIterator[bytes]] | None = None,
    ) -> _http.Response:
        try:
            return await self.resolver.send(
                self.host, method, url, scopes=[*self._scopes, *scopes], headers=headers, body=body
            )
        except _http.ConnectError as exc:
            msg = f"{method} {url}: {exc}"
            raise UnavailableError(msg) from None

    def _url(self, *parts: str) -> _http.URL:
        return self.resolver.url(self.host, self.ref, *parts)

    async def exists(self, desc: Descriptor) -> bool:
        """Whether the repository has ``desc`` already (``HEAD``)."""
        is_manifest = mediatypes.is_manifest(desc.media_type) or mediatypes.is_index(
            desc.media_type
        )
        url = self._url("manifests" if is_manifest else "blobs", desc.digest)
        headers = {"Accept": desc.media_type} if is_manifest else None
        resp = await self._send("HEAD", url, headers=headers)
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise _status_error("HEAD", url, resp)

    async def mount(self, desc: Descriptor, from_repository: str) -> bool:
        """Try a cross-repository mount of ``desc`` from ``from_repository``.

        Returns:
            ``True`` when the registry mounted it, ``False`` when it did not.
        """
        url = self._url("blobs", "uploads", "").copy_merge_params(
            {"mount": desc.digest, "from": from_repository}
        )
        resp = await self._send("POST", url, scopes=[scope(from_repository)])
        if resp.status_code == 201:
            return True
        if resp.status_code == 202:
            # not mounted; cancel the upload session it opened
            location = resp.headers.get("location")
            if location:
                with contextlib.suppress(ContainerdError, _http.HTTPError):
                    await self._send("DELETE", self._location(location))
            return False
        raise _status_error("POST", url, resp)

    def _location(self, location: str) -> _http.URL:
        base = self._url("blobs", "uploads", "")
        return base.join(location)

    async def push_blob(
        self,
        desc: Descriptor,
        body: Callable[[int], AsyncIterator[bytes]],
        *,
        chunk_size: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Upload ``desc`` whose bytes from an offset ``body(offset)`` yields.

        ``chunk_size`` 0 uploads it in one ``PUT``; otherwise it goes in
        ``PATCH`` requests of ``chunk_size`` bytes, then a closing ``PUT``.

        Raises:
            UnavailableError, FailedPreconditionError: the registry refused.
        """
        start = self._url("blobs", "uploads", "")
        resp = await self._send("POST", start)
        if resp.status_code not in (201, 202):
            raise _status_error("POST", start, resp)
        if resp.status_code == 201:
            return
        location = self._location(resp.headers.get("location", ""))
        if chunk_size <= 0 or desc.size <= chunk_size:
            done = 0

            async def whole() -> AsyncIterator[bytes]:
                nonlocal done
                done = 0
                async for chunk in body(0):
                    done += len(chunk)
                    if progress:
                        progress(done)
                    yield chunk

            url = location.copy_merge_params({"digest": desc.digest})
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)}
            resp = await self._send("PUT", url, headers=headers, body=whole)
            if resp.status_code not in (201, 204):
                raise _status_error("PUT", url, resp)
            return
        offset = 0
        while offset < desc.size:
            end = min(offset + chunk_size, desc.size)
            data = bytearray()
            async for chunk in body(offset):
                data += chunk
                if len(data) >= end - offset:
                    break
            piece = bytes(data[: end - offset])
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{end - 1}",
                "Content-Length": str(len(piece)),
            }
            resp = await self._send("PATCH", location, headers=headers, body=piece)
            if resp.status_code != 202:
                raise _status_error("PATCH", location, resp)
            location = self._location(resp.headers.get("location", str(location)))
            offset = end
            if progress:
                progress(offset)
        url = location.copy_merge_params({"digest": desc.digest})
        resp = await self._send("PUT", url, headers={"Content-Length": "0"}, body=b"")
        if resp.status_code not in (201, 204):
            raise _status_error("PUT", url, resp)

    async def push_manifest(self, desc: Descriptor, data: bytes, tag: str = "") -> None:
        """``PUT`` a manifest or index under ``tag`` (or its digest when no tag)."""
        url = self._url("manifests", tag or desc.digest)
        headers = {"Content-Type": desc.media_type}
        resp = await self._send("PUT", url, headers=headers, body=data)
        if resp.status_code not in (200, 201, 204):
            raise _status_error("PUT", url, resp)


def _status_error(method: str, url: _http.URL, resp: _http.Response) -> ContainerdError:
    detail = resp.text[:300].strip()
    msg = f"{method} {url}: unexpected status {resp.status_code} {resp.reason_phrase}"
    if detail:
        msg += f": {detail}"
    if resp.status_code in (400, 409, 412, 416):
        return FailedPreconditionError(msg)
    if resp.status_code == 404:
        return NotFoundError(msg)
    return UnavailableError(msg)
