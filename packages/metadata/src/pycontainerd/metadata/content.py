"""The namespaced content store: per-namespace views over one backend store.

The bytes of a blob live once in the backend (the local store); the database
records which namespaces may see it, with their own labels. A blob becomes
visible in a namespace when it is committed there. Ingests are namespaced the
same way: a client's ref maps to a backend ref ``<ns>/<seq>/<ref>``, so two
namespaces may use the same ref without meeting.

Policy ``shared`` (the default): opening a writer with an expected digest
that the backend already holds (with the expected size, when given) does not
write the bytes again. The blob is committed into the namespace right away
(labels none, lease attached) and the open reports ``AlreadyExists``, which
containerd clients read as "already have it". Policy ``isolated``: every
namespace must write the bytes itself.

Lease: the lease of the request (``pycontainerd.core.namespaces.lease()``,
from the ``containerd-lease`` header) references every blob committed and
every ingest opened under it, in the same transaction, and every blob an
"already exists" answer reports (a writer opened with its digest, a commit of
bytes the namespace has, :meth:`MetadataContentStore.info_leased`): a client
told it need not write a blob relies on it. Unleased ingests get an expiry
24 h ahead for the GC.

Deleting a blob removes it from the namespace and marks the database dirty;
the garbage collector removes the bytes from the backend once no namespace
references them.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from typing import TYPE_CHECKING, Final

from pycontainerd.core import digests, filters
from pycontainerd.core.content import BlobFastReader, Info, Status, ThreadSinkWriter
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import lease, namespace_is_valid, namespace_required
from pycontainerd.metadata._rows import (
    apply_map_paths,
    dump_map,
    ensure_namespace,
    list_matching,
    load_map,
    matcher,
    next_sequence,
    ns_to_datetime,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns
from pycontainerd.metadata.leases import CONTENT, INGESTS, attach, detach

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

    from pycontainerd.core.content import ReaderAt, Store, Writer
    from pycontainerd.metadata.db import MetadataDB, Tx

SHARED: Final = "shared"
ISOLATED: Final = "isolated"
POLICIES: Final = (SHARED, ISOLATED)

#: How long an ingest without a lease lives before the GC may remove it.
INGEST_EXPIRY_NS: Final = 24 * 3600 * 1_000_000_000


def info_adaptor(info: Info) -> filters.Adaptor:
    """Filter fields: ``digest``, ``size``, ``labels.<key>``."""
    return filters.adapt(
        {
            "digest": info.digest or None,
            "size": str(info.size),
            "labels": filters.joined_map(info.labels),
        }
    )


def _status_adaptor(st: Status) -> filters.Adaptor:
    return filters.adapt({"ref": st.ref or None})


def _info(dgst: str, row: tuple[int, str, int, int]) -> Info:
    size, labels, created, updated = row
    return Info(
        digest=dgst,
        size=size,
        labels=load_map(labels),
        created_at=ns_to_datetime(created),
        updated_at=ns_to_datetime(updated),
    )


_BLOB_SEEN: Final = "SELECT 1 FROM blobs WHERE namespace = ? AND digest = ?"
_BLOB_ROW: Final = (
    "SELECT size, labels, created_at, updated_at FROM blobs WHERE namespace = ? AND digest = ?"
)


def _blob_row(tx: Tx, ns: str, dgst: str) -> tuple[int, str, int, int] | None:
    row = tx.execute(_BLOB_ROW, (ns, dgst)).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3])


def _open_ingest(tx: Tx, ns: str, lease_id: str | None, ref: str, expected: str) -> str:
    """The backend ref of the namespace's ingest ``ref``, its row written if new."""
    ensure_namespace(tx, ns)
    row = tx.execute(
        "SELECT backend_ref FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref)
    ).fetchone()
    if row is not None:
        bref = str(row[0])
    else:
        bref = f"{ns}/{next_sequence(tx, 'ingests')}/{ref}"
        tx.execute(
            "INSERT INTO ingests (namespace, ref, backend_ref, expected, expire_at,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                ns,
                ref,
                bref,
                expected,
                None if lease_id else now_ns() + INGEST_EXPIRY_NS,
                now_ns(),
            ),
        )
    attach(tx, ns, lease_id, INGESTS, ref)
    return bref


def _content_not_found(dgst: str) -> NotFoundError:
    return NotFoundError(f"content digest {dgst}")


def _add_blob(
    tx: Tx, ns: str, lease_id: str | None, dgst: str, *, size: int, labels: Mapping[str, str]
) -> None:
    """Make ``dgst`` visible in ``ns``.

    Raises:
        AlreadyExistsError: ``content <dgst>: already exists`` (the lease still
            takes a reference, as upstream does).
    """
    ensure_namespace(tx, ns)
    attach(tx, ns, lease_id, CONTENT, dgst)
    now = now_ns()
    cur = tx.execute(
        "INSERT INTO blobs (namespace, digest, size, labels, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (ns, dgst, size, dump_map(labels), now, now),
    )
    if cur.rowcount == 0:
        msg = f"content {dgst}"
        raise AlreadyExistsError(msg)


def _blobs(tx: Tx, namespace: str) -> Iterator[Info]:
    rows = tx.execute(
        "SELECT digest, size, labels, created_at, updated_at FROM blobs"
        " WHERE namespace = ? ORDER BY digest",
        (namespace,),
    )
    return (_info(r[0], (r[1], r[2], r[3], r[4])) for r in rows)


class _RefGate:
    """One asyncio lock per namespace and ref, held while a writer opens or commits.

    The backend locks its ref only while the bytes move; the database row of
    the ingest and of the blob are written around that. Holding this gate
    across both, as containerd does by opening and committing inside one bolt
    transaction, means a second writer of the same ref sees either the ingest
    before the commit or its result after it (the blob, or no ingest), never
    the half-way state in between.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, ns: str, ref: str) -> AsyncIterator[None]:
        key = (ns, ref)
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class NamespacedWriter:
    """A writer on one namespace's ingest; commit makes the blob visible there."""

    def __init__(
        self,
        store: MetadataContentStore,
        ns: str,
        ref: str,
        lease_id: str | None,
        backend: Writer,
    ) -> None:
        self._store = store
        self._ns = ns
        self.ref = ref
        self._lease = lease_id
        self._w = backend

    def digest(self) -> str:
        """Digest of the bytes written so far."""
        return self._w.digest()

    async def status(self) -> Status:
        """Progress, under the namespace's ref."""
        return dataclasses.replace(await self._w.status(), ref=self.ref)

    async def write(self, data: bytes) -> int:
        """Append ``data``."""
        return await self._w.write(data)

    def thread_sink(self) -> Callable[[bytes | memoryview], None] | None:
        """The backend writer's sink for a worker thread, if it has one."""
        return self._w.thread_sink() if isinstance(self._w, ThreadSinkWriter) else None

    async def truncate(self, size: int) -> None:
        """Discard what was written (``size`` must be 0)."""
        await self._w.truncate(size)

    async def close(self) -> None:
        """Release the ingest; it stays resumable."""
        await self._w.close()

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        """Commit the blob into the backend and make it visible in the namespace.

        Raises:
            InvalidArgumentError: a label is too large.
            FailedPreconditionError: size or digest mismatch.
            AlreadyExistsError: the namespace already has this blob.
        """
        labels = {k: v for k, v in (labels or {}).items() if v != ""}
        validate_labels(labels, "content.Labels")
        # The blob exists in the backend before its row does: keep the
        # collector's backend cleanup out until the row is written, and other
        # writers of this ref out until the ingest row is gone.
        async with self._store.gate.hold(self._ns, self.ref), self._store.db.gc_lock.shared():
            return await self._commit(size, expected, labels)

    async def _commit(self, size: int, expected: str, labels: Mapping[str, str]) -> str:
        written = (await self._w.status()).offset
        dgst = self._w.digest()
        # AlreadyExists from the backend: it had these bytes; the namespace may still need them.
        with contextlib.suppress(AlreadyExistsError):
            dgst = await self._w.commit(size, expected)
        ns, ref, lease_id = self._ns, self.ref, self._lease

        def run(tx: Tx) -> None:
            tx.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            detach(tx, ns, lease_id, INGESTS, ref)
            _add_blob(tx, ns, lease_id, dgst, size=written, labels=labels)

        try:
            await self._store.db.aupdate(run)
        except AlreadyExistsError:
            # Still drop the finished ingest's record, keeping the lease reference.
            def forget(tx: Tx) -> None:
                tx.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
                detach(tx, ns, lease_id, INGESTS, ref)
                attach(tx, ns, lease_id, CONTENT, dgst)

            await self._store.db.aupdate(forget)
            raise
        return dgst


class MetadataContentStore:
    """The content store the daemon serves: namespaced, labelled, leased.

    Same methods as the backend ``LocalStore`` (``info``, ``update``,
    ``walk``, ``delete``, ``reader_at``, ``status``, ``list_statuses``,
    ``abort``, ``writer``), each scoped to the current namespace.

    Args:
        db: the metadata database.
        backend: the store holding the bytes.
        policy: ``shared`` or ``isolated`` (see the module docstring).
    """

    def __init__(self, db: MetadataDB, backend: Store, *, policy: str = SHARED) -> None:
        if policy not in POLICIES:
            msg = f"unknown content sharing policy {go_quote(policy)}"
            raise InvalidArgumentError(msg)
        self.db = db
        self.backend = backend
        self.policy = policy
        self.gate = _RefGate()

    async def info(self, dgst: str) -> Info:
        """Info of a blob visible in the namespace (labels are the namespace's).

        Raises:
            NotFoundError: ``content digest <dgst>: not found``.
        """
        info = self._visible_info(namespace_required(), dgst)
        if info is None:
            raise _content_not_found(dgst)
        return info

    async def info_leased(self, dgst: str) -> Info:
        """:meth:`info`, and the current lease (if any) now references the blob.

        One transaction, as a writer opened with the digest of a blob the
        namespace has: the caller may skip writing it and rely on it.

        Raises:
            NotFoundError: ``content digest <dgst>: not found``, or ``lease
                does not exist``.
        """
        ns = namespace_required()
        lease_id = lease()
        if not lease_id:
            return await self.info(dgst)

        def run(tx: Tx) -> Info:
            row = _blob_row(tx, ns, dgst)
            if row is None:
                raise _content_not_found(dgst)
            attach(tx, ns, lease_id, CONTENT, dgst)
            return _info(dgst, row)

        return await self.db.aupdate(run)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        """Update a blob's labels (paths ``labels`` and ``labels.<key>``; none = all).

        Raises:
            InvalidArgumentError: another path, or a label too large.
            NotFoundError: the blob is not in the namespace.
        """
        ns = namespace_required()
        dgst = info.digest

        def run(tx: Tx) -> Info:
            row = _blob_row(tx, ns, dgst)
            if row is None:
                raise _content_not_found(dgst)
            current = load_map(row[1])
            if not fieldpaths:
                new = dict(info.labels)
            else:
                new = current
                for path in fieldpaths:
                    if path == "labels":
                        new = dict(info.labels)
                    elif path.startswith("labels."):
                        new = apply_map_paths(new, info.labels, [path.removeprefix("labels.")])
                    else:
                        msg = (
                            f"cannot update {go_quote(path)} field on content info {go_quote(dgst)}"
                        )
                        raise InvalidArgumentError(msg)
            new = {k: v for k, v in new.items() if v != ""}
            validate_labels(new, "content.Labels")
            now = now_ns()
            tx.execute(
                "UPDATE blobs SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?",
                (dump_map(new), now, ns, dgst),
            )
            if any(k.startswith("containerd.io/gc.") for k in current.keys() - new.keys()):
                tx.mark_dirty()  # a GC reference went away
            return _info(dgst, (row[0], dump_map(new), row[2], now))

        return await self.db.aupdate(run)

    async def walk(self, *fs: str) -> AsyncIterator[Info]:
        """Blobs of the namespace matching any of ``fs``, by digest.

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        for info in await list_matching(self.db, fs, info_adaptor, _blobs):
            yield info

    async def delete(self, dgst: str) -> None:
        """Remove the blob from the namespace (the GC removes the bytes later).

        Raises:
            NotFoundError: ``content digest <dgst>: not found``.
        """
        ns = namespace_required()

        def run(tx: Tx) -> None:
            cur = tx.execute("DELETE FROM blobs WHERE namespace = ? AND digest = ?", (ns, dgst))
            if cur.rowcount == 0:
                raise _content_not_found(dgst)
            tx.mark_dirty()

        await self.db.aupdate(run)

    async def reader_at(self, dgst: str) -> ReaderAt:
        """Open a blob visible in the namespace for reading.

        Raises:
            NotFoundError: ``content digest <dgst>: not found``.
        """
        ns = namespace_required()
        if self.db.point_row(_BLOB_SEEN, (ns, dgst)) is None:
            raise _content_not_found(dgst)
        return await self.backend.reader_at(dgst)

    def info_now(self, ns: str, dgst: str) -> Info | None:
        """:meth:`info` as one point query on the calling thread; None if not visible.

        The ``Content.Info`` fast path (three calls per image in ``ctr images
        ls``); None also for an invalid namespace, which the normal path reports.
        """
        return self._visible_info(ns, dgst) if namespace_is_valid(ns) else None

    def _visible_info(self, ns: str, dgst: str) -> Info | None:
        """One point query on the calling thread: the blob's Info in ``ns``, if it sees it."""
        row = self.db.point_row(_BLOB_ROW, (ns, dgst))
        return None if row is None else _info(dgst, (row[0], row[1], row[2], row[3]))

    def read_now(self, ns: str, dgst: str, offset: int, size: int) -> tuple[int, bytes] | None:
        """The backend's :meth:`read_now` for a blob visible in ``ns``; None if not at once.

        Runs on the event loop (one point query); a namespace that is not a
        valid identifier, or a blob the namespace does not see, answers None
        and the normal path reports the error.
        """
        if not namespace_is_valid(ns):
            return None
        backend = self.backend
        if not isinstance(backend, BlobFastReader):
            return None
        if self.db.point_row(_BLOB_SEEN, (ns, dgst)) is None:
            return None
        return backend.read_now(dgst, offset, size)

    async def _backend_ref(self, ns: str, ref: str) -> str:
        row = await self.db.aview(
            lambda tx: tx.execute(
                "SELECT backend_ref FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref)
            ).fetchone()
        )
        if row is None:
            msg = f"reference {ref}"
            raise NotFoundError(msg)
        return str(row[0])

    async def status(self, ref: str) -> Status:
        """Progress of the namespace's ingest ``ref``.

        Raises:
            NotFoundError: ``reference <ref>: not found``.
        """
        ns = namespace_required()
        bref = await self._backend_ref(ns, ref)
        try:
            st = await self.backend.status(bref)
        except NotFoundError:
            msg = f"reference {ref}"
            raise NotFoundError(msg) from None
        return dataclasses.replace(st, ref=ref)

    async def list_statuses(self, *fs: str) -> list[Status]:
        """Ingests of the namespace matching any of ``fs`` (field ``ref``).

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        ns = namespace_required()
        match = matcher(fs, _status_adaptor)
        rows = await self.db.aview(
            lambda tx: tx.execute(
                "SELECT backend_ref, ref FROM ingests WHERE namespace = ?", (ns,)
            ).fetchall()
        )
        by_bref = {str(b): str(r) for b, r in rows}
        out = [
            dataclasses.replace(st, ref=by_bref[st.ref])
            for st in await self.backend.list_statuses()
            if st.ref in by_bref
        ]
        return sorted((s for s in out if match(s)), key=lambda s: s.ref)

    async def abort(self, ref: str) -> None:
        """Remove the namespace's ingest ``ref``.

        Raises:
            NotFoundError: ``reference <ref>: not found``.
        """
        ns = namespace_required()
        bref = await self._backend_ref(ns, ref)
        lease_id = lease()

        def run(tx: Tx) -> None:
            tx.execute("DELETE FROM ingests WHERE namespace = ? AND ref = ?", (ns, ref))
            detach(tx, ns, lease_id, INGESTS, ref)
            tx.mark_dirty()

        # Row gone, backend ingest not yet: the collector must not abort it first.
        async with self.db.gc_lock.shared():
            await self.db.aupdate(run)
            try:
                await self.backend.abort(bref)
            except NotFoundError:
                msg = f"reference {ref}"
                raise NotFoundError(msg) from None

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> NamespacedWriter:
        """Open (or resume) the namespace's ingest ``ref``.

        Raises:
            InvalidArgumentError: empty ref or a malformed expected digest.
            AlreadyExistsError: ``content <expected>: already exists`` when the
                namespace has the blob, or (``shared`` policy) when the backend
                had it and it was just committed into the namespace.
            UnavailableError: another writer holds ``ref``.
        """
        ns = namespace_required()
        lease_id = lease()
        if not ref:
            msg = "ref must not be empty"
            raise InvalidArgumentError(msg)
        if expected:
            digests.parse(expected)
        # A commit of this ref in progress finishes first: the expected digest
        # is then checked against its result.
        async with self.gate.hold(ns, ref):
            return await self._open(ns, lease_id, ref, total, expected)

    async def _open(
        self, ns: str, lease_id: str | None, ref: str, total: int, expected: str
    ) -> NamespacedWriter:
        """Write the ingest's row in one transaction, then open the backend writer.

        With an expected digest that transaction first looks for the blob:
        in the namespace, or (``shared`` policy) in the backend, whose blob is
        then shared into the namespace. Either way the lease takes it and
        ``AlreadyExists`` is raised, with no ingest opened.
        """
        # The collector must not delete a backend blob between our seeing it
        # and its row being written, nor abort the backend ingest between its
        # row and its opening (it aborts backend ingests that have no row).
        async with self.db.gc_lock.shared():
            shared = None
            if expected and self.policy == SHARED:
                shared = await self._backend_blob(expected, total)

            def run(tx: Tx) -> str | None:
                if expected:
                    if _blob_row(tx, ns, expected) is not None:
                        attach(tx, ns, lease_id, CONTENT, expected)
                        return None
                    if shared is not None:
                        _add_blob(tx, ns, lease_id, expected, size=shared.size, labels={})
                        return None
                return _open_ingest(tx, ns, lease_id, ref, expected)

            bref = await self.db.aupdate(run)
            if bref is None:
                msg = f"content {expected}"
                raise AlreadyExistsError(msg)
            # The expected digest was checked against the namespace above; the
            # backend must not short-cut on it, or the namespace would never get
            # the blob.
            backend = await self.backend.writer(bref, total=total)
        return NamespacedWriter(self, ns, ref, lease_id, backend)

    async def _backend_blob(self, dgst: str, total: int) -> Info | None:
        """The backend's blob ``dgst``, if it has one of the size given (when one is)."""
        try:
            info = await self.backend.info(dgst)
        except ContainerdError:
            return None
        if total > 0 and info.size != total:
            return None  # a wrong descriptor: let the client write and fail
        return info
