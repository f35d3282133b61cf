"""The service-facing content store: a store that announces deletions.

containerd layers its content service this way: the metadata package's
namespaced store does the work, ``io.containerd.service.v1.content-service``
wraps it to publish ``/content/delete`` (``containerd.events.ContentDelete``)
after a successful delete, and the gRPC servicer only translates. Garbage
collection removes blobs below this layer, so it publishes nothing, as upstream.

Importing this module must not import grpc; the event message is imported
lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pycontainerd.core.content import FastReader, info_leased

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.core.content import Info, ReaderAt, Status, Store, Writer
    from pycontainerd.core.events import Publisher

TOPIC_DELETE: Final = "/content/delete"


class EventStore:
    """Delegates to ``store`` and publishes ``/content/delete`` on ``publisher``."""

    def __init__(self, store: Store, publisher: Publisher) -> None:
        self.store = store
        self._publisher = publisher
        self._fast = store if isinstance(store, FastReader) else None

    async def info(self, dgst: str) -> Info:
        return await self.store.info(dgst)

    async def info_leased(self, dgst: str) -> Info:
        """The wrapped store's ``info_leased`` if it has one (else ``info``: no leases)."""
        return await info_leased(self.store, dgst)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        return await self.store.update(info, *fieldpaths)

    def walk(self, *filters: str) -> AsyncIterator[Info]:
        return self.store.walk(*filters)

    async def delete(self, dgst: str) -> None:
        """Delete, then publish ``ContentDelete{digest}`` in the current namespace."""
        from pycontainerd.api.events import content_pb2

        await self.store.delete(dgst)
        await self._publisher.publish(TOPIC_DELETE, content_pb2.ContentDelete(digest=dgst))

    async def reader_at(self, dgst: str) -> ReaderAt:
        return await self.store.reader_at(dgst)

    def info_now(self, ns: str, dgst: str) -> Info | None:
        """The wrapped store's ``info_now`` (the Info fast path), if it is a ``FastReader``."""
        return None if self._fast is None else self._fast.info_now(ns, dgst)

    def read_now(self, ns: str, dgst: str, offset: int, size: int) -> tuple[int, bytes] | None:
        """The wrapped store's ``read_now`` (the Read fast path), if it is a ``FastReader``."""
        return None if self._fast is None else self._fast.read_now(ns, dgst, offset, size)

    async def status(self, ref: str) -> Status:
        return await self.store.status(ref)

    async def list_statuses(self, *filters: str) -> list[Status]:
        return await self.store.list_statuses(*filters)

    async def abort(self, ref: str) -> None:
        await self.store.abort(ref)

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer:
        return await self.store.writer(ref, total=total, expected=expected)
