"""The stream manager (containerd's ``plugins/streaming`` ``manager``).

A client opens a stream on the Streaming service and names it in its first
message (``StreamInit``); the Transfer service finds it by that name, in the
caller's namespace, when a request refers to it (progress, archive bytes,
credentials). A stream is registered until either side closes it.

A stream opened under a lease (the call's ``containerd-lease``) is held by
that lease, as upstream's manager makes streams a resource of the garbage
collector: once the lease is gone (deleted, or expired and collected) the
stream is closed. A stream without a lease lives until a side closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from pycontainerd.api.streams import StreamClosedError
from pycontainerd.core.errdefs import AlreadyExistsError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from google.protobuf import any_pb2

__all__ = ["ManagedStream", "StreamManager"]

log = logging.getLogger(__name__)

LEASE_CHECK_INTERVAL = 1.0
"""Seconds between checks that the leases holding streams still exist."""


class ManagedStream:
    """One registered stream: messages in from the client, out through ``write``.

    Args:
        incoming: the call's request messages.
        write: sends one message to the client.
    """

    def __init__(
        self,
        incoming: AsyncIterator[any_pb2.Any],
        write: Callable[[any_pb2.Any], Awaitable[None]],
    ) -> None:
        self._incoming = incoming
        self._write = write
        self._closed = asyncio.Event()
        self._ended = asyncio.Event()
        self._on_close: list[Callable[[], None]] = []

    async def send(self, msg: any_pb2.Any) -> None:
        if self._closed.is_set():
            raise StreamClosedError("stream closed")
        try:
            await self._write(msg)
        except (ConnectionError, RuntimeError, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not self._closed.is_set():
                raise
            raise StreamClosedError(str(exc) or "stream closed") from None

    async def recv(self) -> any_pb2.Any:
        if self._closed.is_set():
            raise StreamClosedError("stream closed")
        closed = asyncio.ensure_future(self._closed.wait())
        nxt = asyncio.ensure_future(anext(self._incoming))
        try:
            done, _ = await asyncio.wait({closed, nxt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if nxt not in done:
            nxt.cancel()
            raise StreamClosedError("stream closed")
        try:
            return nxt.result()
        except StopAsyncIteration:
            raise StreamClosedError("stream closed by the client") from None
        except Exception as exc:  # the call broke (client reset, connection lost)
            self.close_now()
            msg = f"stream broken: {type(exc).__name__}"
            raise StreamClosedError(msg) from None

    async def close(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """Close the stream: the Streaming call ends, and the manager forgets it."""
        if self._closed.is_set():
            return
        self._closed.set()
        for cb in self._on_close:
            cb()

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the stream closes."""
        self._on_close.append(callback)

    @property
    def closed(self) -> bool:
        """Whether the stream is closed."""
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        """Wait until the stream is closed."""
        await self._closed.wait()

    def mark_ended(self) -> None:
        """The Streaming call is over: its end (status) has gone out to the client."""
        self._ended.set()

    async def wait_ended(self) -> None:
        """Wait until the Streaming call is over (after :meth:`close`)."""
        await self._ended.wait()


class StreamManager:
    """Streams by namespace and name.

    Args:
        lease_ids: the ids of the leases of a namespace that exist; with it,
            streams registered under a lease close when it is gone.
        interval: seconds between those checks.
    """

    def __init__(
        self,
        lease_ids: Callable[[str], Awaitable[set[str]]] | None = None,
        *,
        interval: float = LEASE_CHECK_INTERVAL,
    ) -> None:
        self._streams: dict[tuple[str, str], ManagedStream] = {}
        self._leases: dict[tuple[str, str], str] = {}
        self._lease_ids = lease_ids
        self._interval = interval
        self._watcher: asyncio.Task[None] | None = None

    def add(self, namespace: str, name: str, stream: ManagedStream, lease: str = "") -> None:
        """Register ``stream`` as ``name`` until it closes (or ``lease`` is gone).

        Raises:
            AlreadyExistsError: ``name`` is taken in ``namespace``.
        """
        key = (namespace, name)
        if key in self._streams:
            msg = f"stream {name}: already exists"
            raise AlreadyExistsError(msg)
        self._streams[key] = stream
        stream.on_close(lambda: self._forget(key, stream))
        if lease:
            self._leases[key] = lease
            if self._lease_ids is not None and (self._watcher is None or self._watcher.done()):
                self._watcher = asyncio.create_task(self._watch_leases())

    def leased(self, namespace: str, lease: str) -> list[str]:
        """The names of the open streams ``lease`` holds in ``namespace``."""
        return sorted(n for (ns, n), ls in self._leases.items() if ns == namespace and ls == lease)

    def _forget(self, key: tuple[str, str], stream: ManagedStream) -> None:
        if self._streams.get(key) is stream:
            del self._streams[key]
            self._leases.pop(key, None)

    async def _watch_leases(self) -> None:
        """Close the streams whose lease is gone; end when no stream has a lease."""
        assert self._lease_ids is not None  # noqa: S101 - started only with it
        while self._leases:
            await asyncio.sleep(self._interval)
            for ns in {ns for ns, _ in self._leases}:
                try:
                    alive = await self._lease_ids(ns)
                except Exception:  # a failed check closes nothing
                    log.debug("cannot list the leases of %s", ns, exc_info=True)
                    continue
                for key, lease in list(self._leases.items()):
                    if key[0] == ns and lease not in alive:
                        stream = self._streams.get(key)
                        log.debug("lease %s is gone: closing stream %s", lease, key[1])
                        if stream is not None:
                            stream.close_now()
                        self._leases.pop(key, None)

    async def aclose(self) -> None:
        """Stop checking leases."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def get(self, namespace: str, name: str) -> ManagedStream:
        """The stream ``name`` of ``namespace``.

        Raises:
            NotFoundError: no such open stream.
        """
        stream = self._streams.get((namespace, name))
        if stream is None:
            msg = f"stream {name}: not found"
            raise NotFoundError(msg)
        return stream

    def __len__(self) -> int:
        return len(self._streams)
