"""The content store contract: immutable blobs addressed by digest.

This mirrors containerd's ``content`` package. A store holds committed blobs
(``Info`` describes one) and in-progress ingests (``Status`` describes one).
Writers are obtained by *ref*, a client-chosen name for an ingest: only one
writer may hold a ref at a time (others get ``UnavailableError``), and an
interrupted ingest can be resumed from its offset by asking for the same ref
again. ``Writer.commit`` checks size and digest and then publishes the blob
atomically; committing a blob that already exists raises
``AlreadyExistsError``.

The split into ``Provider``, ``Ingester``, ``Manager`` and ``IngestManager``
is containerd's; ``Store`` is all four. Everything is async: implementations
do their I/O off the event loop.

Errors: an unknown digest or ref raises ``NotFoundError``; malformed input
raises ``InvalidArgumentError``; a size or digest mismatch on commit raises
``FailedPreconditionError``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pycontainerd.core.types import UNSET_TIME

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
    from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Info:
    """A committed blob.

    Attributes:
        digest: its ``algorithm:hex`` digest.
        size: its length in bytes.
        created_at: when it was committed.
        updated_at: when its labels last changed.
        labels: mutable metadata; ``containerd.io/gc.*`` labels hold GC references.
    """

    digest: str
    size: int = 0
    created_at: datetime = UNSET_TIME
    updated_at: datetime = UNSET_TIME
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    """An ingest in progress.

    Attributes:
        ref: the name the client gave the ingest.
        offset: bytes received so far.
        total: expected length, ``0`` when unknown.
        expected: expected digest, ``""`` when unknown.
        started_at: when the ingest began.
        updated_at: when data last arrived.
    """

    ref: str
    offset: int = 0
    total: int = 0
    expected: str = ""
    started_at: datetime = UNSET_TIME
    updated_at: datetime = UNSET_TIME


@runtime_checkable
class ReaderAt(Protocol):
    """Random access to one committed blob; close it when done."""

    size: int

    async def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes at ``offset``; fewer (or none) at the end of the blob."""
        ...

    async def close(self) -> None:
        """Release the blob."""
        ...


@runtime_checkable
class Writer(Protocol):
    """An ingest held open by one client. Append-only.

    ``commit`` or ``close`` releases the ref. After ``close`` the data stays,
    so the ingest can be resumed; ``Store.abort`` discards it.
    """

    def digest(self) -> str:
        """Digest of the bytes written so far."""
        ...

    async def status(self) -> Status:
        """Current progress."""
        ...

    async def write(self, data: bytes) -> int:
        """Append ``data``; return the number of bytes written."""
        ...

    async def truncate(self, size: int) -> None:
        """Discard data beyond ``size`` (containerd supports only ``0``)."""
        ...

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        """Check ``size`` and ``expected`` (when non-zero/non-empty) and publish the blob.

        Returns the committed digest. Raises ``FailedPreconditionError`` on a
        mismatch and ``AlreadyExistsError`` when the blob exists already.
        """
        ...

    async def close(self) -> None:
        """Release the ref, keeping the data for a later resume."""
        ...


@runtime_checkable
class ThreadSinkWriter(Protocol):
    """A writer that can also be appended to from a worker thread (an optional capability)."""

    def thread_sink(self) -> Callable[[bytes | memoryview], None] | None:
        """A blocking ``append(data)`` for a worker thread, or ``None`` if this writer has none.

        While a thread appends with it, the writer's other methods must not
        be called; ``digest()`` and ``status()`` include what it appended once
        it has returned.
        """
        ...


@runtime_checkable
class Provider(Protocol):
    """Gives read access to committed blobs."""

    async def reader_at(self, dgst: str) -> ReaderAt:
        """Open the blob ``dgst``; ``NotFoundError`` when it does not exist."""
        ...


@runtime_checkable
class Ingester(Protocol):
    """Accepts new blobs."""

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer:
        """Open (or resume) the ingest ``ref``.

        ``UnavailableError`` when another writer holds ``ref``;
        ``AlreadyExistsError`` when ``expected`` is already committed.
        """
        ...


@runtime_checkable
class Manager(Protocol):
    """Inspects and manages committed blobs."""

    async def info(self, dgst: str) -> Info:
        """What the store knows about ``dgst``; ``NotFoundError`` when absent."""
        ...

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        """Update the labels of ``info.digest``.

        ``fieldpaths`` (``labels``, ``labels.<key>``) limit what changes; none
        means replace all labels. An empty value deletes a label.
        """
        ...

    def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Every committed blob matching any of ``filters``.

        Fields: ``digest``, ``size``, ``labels.<key>``.
        """
        ...

    async def delete(self, dgst: str) -> None:
        """Remove the blob; ``NotFoundError`` when absent."""
        ...


@runtime_checkable
class IngestManager(Protocol):
    """Inspects and cancels ingests."""

    async def status(self, ref: str) -> Status:
        """Progress of ``ref``; ``NotFoundError`` when there is no such ingest."""
        ...

    async def list_statuses(self, *filters: str) -> list[Status]:
        """Every ingest matching any of ``filters`` (field ``ref``)."""
        ...

    async def abort(self, ref: str) -> None:
        """Discard the ingest ``ref``; ``NotFoundError`` when there is none."""
        ...


@runtime_checkable
class Store(Provider, Ingester, Manager, IngestManager, Protocol):
    """A complete content store (containerd's ``content.Store``)."""


@runtime_checkable
class LeasingManager(Protocol):
    """A store whose "already have it" check also protects the blob for the caller.

    The metadata store: the blob, if the namespace has it, is added to the
    current lease in the same transaction, as its writer does when opened
    with the digest of a blob it has. The Content service asks this when a
    Write names its expected digest only late (at COMMIT) and answers
    ``AlreadyExists`` for a blob it has: the client then skips the blob and
    relies on it, so the blob must not be collected before the client's
    own references (labels, an image) exist.
    """

    async def info_leased(self, dgst: str) -> Info:
        """:meth:`Manager.info`, the blob now also held by the current lease (if any)."""
        ...


async def info_leased(store: Manager, dgst: str) -> Info:
    """``store``'s :meth:`LeasingManager.info_leased`, or its ``info`` (a store without leases)."""
    if isinstance(store, LeasingManager):
        return await store.info_leased(dgst)
    return await store.info(dgst)


@runtime_checkable
class FastReader(Protocol):
    """Synchronous reads a namespaced store answers on the event loop, when it can at once.

    The daemon's fast path for ``Content.Info`` and small ``Content.Read``
    calls: the gRPC service asks before any task exists. Both answer None
    when they cannot answer without waiting (bytes on disk, an invalid
    namespace, a blob the namespace does not see); the caller then takes the
    async path, which also reports the errors. ``ns`` is explicit because no
    request context is set up yet.
    """

    def info_now(self, ns: str, dgst: str) -> Info | None:
        """The blob's ``Info`` as ``ns`` sees it, or None."""
        ...

    def read_now(self, ns: str, dgst: str, offset: int, size: int) -> tuple[int, bytes] | None:
        """``(blob size, bytes)`` of the range, or None; ``size <= 0`` reads to the end."""
        ...


@runtime_checkable
class BlobFastReader(Protocol):
    """The backend side of :class:`FastReader`: a small range of a blob, without namespaces.

    The metadata store checks visibility, then asks its backend (the local
    store) for the bytes.
    """

    def read_now(self, dgst: str, offset: int, size: int) -> tuple[int, bytes] | None:
        """``(blob size, bytes)`` of the range if they can be had without waiting, else None."""
        ...


async def read_blob(provider: Provider, dgst: str) -> bytes:
    """The whole blob ``dgst`` (containerd's ``content.ReadBlob``).

    Meant for small blobs such as manifests and configs.

    Raises:
        NotFoundError: the blob does not exist.
    """
    reader = await provider.reader_at(dgst)
    try:
        return b"".join([data async for data in read_chunks(reader, reader.size)])
    finally:
        await reader.close()


async def gather_chunks(chunks: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    """``chunks`` joined into blocks of at least ``size`` bytes (the last one may be shorter).

    For a sink that pays per call (a ``Writer.write`` message, a hop to a
    worker thread) fed by a source of small pieces (an HTTP body).
    """
    pending: list[bytes] = []
    held = 0
    async for chunk in chunks:
        pending.append(chunk)
        held += len(chunk)
        if held >= size:
            yield b"".join(pending)
            pending.clear()
            held = 0
    if pending:
        yield b"".join(pending)


async def read_chunks(reader: ReaderAt, chunk_size: int, offset: int = 0) -> AsyncIterator[bytes]:
    """What ``reader`` holds from ``offset`` to its end, at most ``chunk_size`` bytes a time.

    Stops early if a read returns nothing (the blob is shorter than it said).
    """
    while offset < reader.size:
        data = await reader.read_at(offset, min(chunk_size, reader.size - offset))
        if not data:
            return
        offset += len(data)
        yield data
