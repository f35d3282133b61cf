"""A backend snapshotter seen through one namespace (containerd's ``metadata`` snapshotter).

Every namespace has its own keys; the backend snapshotter (overlayfs,
native, btrfs...) is shared, and each namespace key maps to a unique backend
key ``<ns>/<seq>/<key>`` (see :mod:`pycontainerd.metadata.snapshots`). Names,
parents, kinds and labels as a namespace sees them live in the metadata
database; the backend only holds the data. Snapshots created while a lease
is current (the ``containerd-lease`` header) are referenced by that lease.

The namespace and lease come from the request context
(:func:`pycontainerd.core.namespaces.namespace_required`).

Backend calls cannot run inside a database transaction (they are async and
slow), so each mutation is: check and record in the database, call the
backend, and undo the record if the backend fails. A per-snapshotter lock
keeps these steps from interleaving within the process.

``remove`` forgets the key and removes the backend snapshot right away (the
garbage collector also sweeps backend snapshots nobody references, which
catches whatever a crash left behind).

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pycontainerd.core import filters, namespaces
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.snapshots import BlockingSteps, Cleaner, Info, Kind, Snapshotter, Usage
from pycontainerd.metadata import snapshots as records
from pycontainerd.metadata._rows import (
    apply_map_paths,
    dump_map,
    ns_to_datetime,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns
from pycontainerd.metadata.leases import SNAPSHOTS_PREFIX, attach

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from pycontainerd.core.types import Mount
    from pycontainerd.metadata.db import MetadataDB, Tx

__all__ = ["NamespacedSnapshotter", "info_adaptor"]

log = logging.getLogger(__name__)

#: Labels with this prefix are passed down to the backend snapshotter too.
BACKEND_LABEL_PREFIX = "containerd.io/snapshot/"


def info_adaptor(info: Info) -> filters.Adaptor:
    """Filter fields of a snapshot: ``kind``, ``name``, ``parent``, ``labels.<key>``."""
    return filters.adapt(
        {
            "kind": str(info.kind).lower(),
            "name": info.name,
            "parent": info.parent,
            "labels": filters.joined_map(info.labels),
        }
    )


def _info(rec: records.SnapshotRecord) -> Info:
    return Info(
        kind=Kind.parse(rec.kind),
        name=rec.key,
        parent=rec.parent,
        labels=dict(rec.labels),
        created_at=ns_to_datetime(rec.created_at),
        updated_at=ns_to_datetime(rec.updated_at),
    )


def _committed_backend_key(active: str, ns: str, name: str) -> str:
    """The backend key of ``name`` committed from the active backend key ``active``.

    ``<ns>/<seq>/<name>`` with the active snapshot's sequence number: that number
    was drawn for the active snapshot alone, and the backend commit replaces it,
    so the key is unique without drawing (and durably writing) another one.
    """
    prefix = f"{ns}/"
    seq = active.removeprefix(prefix).partition("/")[0]
    return f"{prefix}{seq}/{name}"


def _backend_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (labels or {}).items() if k.startswith(BACKEND_LABEL_PREFIX)}


class NamespacedSnapshotter:
    """The Snapshotter contract over ``backend``, keyed per namespace.

    Args:
        db: the metadata database.
        name: the backend's name (``overlayfs``), as the database records it.
        backend: the shared snapshotter.
    """

    def __init__(self, db: MetadataDB, name: str, backend: Snapshotter) -> None:
        self._db = db
        self.name = name
        self.backend = backend
        self._lock = asyncio.Lock()

    @property
    def _rtype(self) -> str:
        return SNAPSHOTS_PREFIX + self.name

    async def _get(self, key: str) -> records.SnapshotRecord:
        ns = namespaces.namespace_required()
        # one row by primary key: cheaper on the loop than a trip to the reader pool
        return await self._db.aview_point(lambda tx: records.get(tx, ns, self.name, key))

    async def stat(self, key: str) -> Info:
        """Info of ``key`` in the current namespace."""
        return _info(await self._get(key))

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        """Update the labels of ``info.name`` (``labels``, ``labels.<key>``; all when none).

        Raises:
            NotFoundError: no such snapshot.
            InvalidArgumentError: another field is named, or a label is too large.
        """
        ns = namespaces.namespace_required()
        if not info.name:
            msg = "snapshot name must not be empty"
            raise InvalidArgumentError(msg)

        def run(tx: Tx) -> records.SnapshotRecord:
            rec = records.get(tx, ns, self.name, info.name)
            keys: list[str] = []
            replace = not fieldpaths
            for path in fieldpaths:
                if path == "labels":
                    replace = True
                elif path.startswith("labels."):
                    keys.append(path.removeprefix("labels."))
                else:
                    msg = f"cannot update {go_quote(path)} field on snapshot {go_quote(info.name)}"
                    raise InvalidArgumentError(msg)
            labels = dict(info.labels) if replace else dict(rec.labels)
            labels = apply_map_paths(labels, info.labels, keys)
            labels = {k: v for k, v in labels.items() if v}
            validate_labels(labels, "snapshot.Labels")
            tx.execute(
                "UPDATE snapshots SET labels = ?, updated_at = ?"
                " WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (dump_map(labels), now_ns(), ns, self.name, info.name),
            )
            if rec.labels != labels:
                tx.mark_dirty()  # a gc.ref label may have gone
            return records.get(tx, ns, self.name, info.name)

        return _info(await self._db.aupdate(run))

    async def usage(self, key: str) -> Usage:
        """Backend usage of ``key``."""
        return await self.backend.usage((await self._get(key)).backend_key)

    async def mounts(self, key: str) -> list[Mount]:
        """Backend mounts of ``key``."""
        return await self.backend.mounts((await self._get(key)).backend_key)

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create active ``key`` on ``parent`` in the current namespace."""
        return await self._create(Kind.ACTIVE, key, parent, labels)

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create view ``key`` of ``parent`` in the current namespace."""
        return await self._create(Kind.VIEW, key, parent, labels)

    async def _create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        ns = namespaces.namespace_required()
        lease = namespaces.lease()

        def record(tx: Tx) -> tuple[records.SnapshotRecord, str]:
            parent_key = ""
            if parent:
                try:
                    prec = records.get(tx, ns, self.name, parent)
                except NotFoundError as exc:
                    msg = f"parent snapshot {parent} does not exist"
                    raise NotFoundError(msg) from exc
                if prec.kind != "committed":
                    msg = f"parent {go_quote(parent)} is not committed snapshot"
                    raise InvalidArgumentError(msg)
                parent_key = prec.backend_key
            rec = records.add(
                tx,
                ns,
                self.name,
                key,
                parent=parent,
                kind=str(kind).lower(),
                labels=labels,
                lease_id=lease,
            )
            return rec, parent_key

        def forget(tx: Tx) -> None:  # the row again, when the backend failed
            records.remove(tx, ns, self.name, key, lease_id=lease)

        backend = self.backend
        # The row comes first, but a collection may have read the rows it keeps
        # before this one and walk the backend after the snapshot exists: hold the
        # GC lock shared across both, as commit does, or it removes the new snapshot.
        async with self._lock, self._db.gc_lock.shared():
            if kind is Kind.ACTIVE and isinstance(backend, BlockingSteps):
                steps = backend

                def both() -> list[Mount]:  # the row and the backend in one trip
                    rec, parent_key = self._db.update(record)
                    try:
                        return steps.prepare_blocking(
                            rec.backend_key, parent_key, labels=_backend_labels(labels)
                        )
                    except BaseException:
                        self._db.update(forget)
                        raise

                return await self._db.on_writer(both)
            rec, parent_key = await self._db.aupdate(record)
            try:
                if kind is Kind.VIEW:
                    return await self.backend.view(
                        rec.backend_key, parent_key, labels=_backend_labels(labels)
                    )
                return await self.backend.prepare(
                    rec.backend_key, parent_key, labels=_backend_labels(labels)
                )
            except BaseException:
                await self._db.aupdate(forget)
                raise

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        """Commit active ``key`` as ``name`` in the current namespace."""
        ns = namespaces.namespace_required()
        lease = namespaces.lease()
        if not name:
            msg = "snapshot name must not be empty"
            raise InvalidArgumentError(msg)

        def check(tx: Tx) -> tuple[records.SnapshotRecord, str]:
            rec = records.get(tx, ns, self.name, key)
            if rec.kind != "active":
                msg = f"snapshot {go_quote(key)} is not active"
                raise FailedPreconditionError(msg)
            exists = tx.execute(
                "SELECT 1 FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                (ns, self.name, name),
            ).fetchone()
            if exists is not None:
                msg = f"snapshot {go_quote(name)}"
                raise AlreadyExistsError(msg)
            return rec, _committed_backend_key(rec.backend_key, ns, name)

        # The backend commit creates ``backend_name`` before its row exists: hold the GC
        # lock shared across both, or a collection in between removes the new layer.
        # The checks are two point reads (on the loop, no write transaction): prepare,
        # commit and remove of this snapshotter wait for the lock, so what they read
        # still holds when ``record`` writes the row.
        async with self._lock, self._db.gc_lock.shared():
            rec, backend_name = await self._db.aview_point(check)
            final = dict(labels) if labels else dict(rec.labels)
            final = {k: v for k, v in final.items() if v}
            validate_labels(final, "snapshot.Labels")
            backend = self.backend
            blocking = backend if isinstance(backend, BlockingSteps) else None
            if blocking is None:
                await backend.commit(backend_name, rec.backend_key, labels=_backend_labels(final))

            def record(tx: Tx) -> None:
                records.remove(tx, ns, self.name, key, lease_id=lease)
                now = now_ns()
                tx.execute(
                    "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent,"
                    " kind, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ns,
                        self.name,
                        name,
                        backend_name,
                        rec.parent,
                        "committed",
                        dump_map(final),
                        now,
                        now,
                    ),
                )
                attach(tx, ns, lease, self._rtype, name)

            if blocking is None:
                await self._db.aupdate(record)
                return
            steps = blocking

            def both() -> None:  # the backend and the row in one trip
                steps.commit_blocking(backend_name, rec.backend_key, labels=_backend_labels(final))
                self._db.update(record)

            await self._db.on_writer(both)

    async def remove(self, key: str) -> None:
        """Remove ``key`` from the namespace and its data from the backend.

        Raises:
            NotFoundError: no such snapshot.
            FailedPreconditionError: another snapshot is based on it.
        """
        ns = namespaces.namespace_required()
        lease = namespaces.lease()
        async with self._lock:
            rec = await self._db.aupdate(
                lambda tx: records.remove(tx, ns, self.name, key, lease_id=lease)
            )
            try:
                await self.backend.remove(rec.backend_key)
            except NotFoundError:
                pass
            except Exception as exc:
                log.warning("snapshotter %s: backend remove of %s failed: %s", self.name, key, exc)

    async def walk(self, *fs: str) -> AsyncIterator[Info]:
        """Snapshots of the current namespace matching any of ``fs``."""
        ns = namespaces.namespace_required()
        flt = filters.parse(*fs)
        recs = await self._db.aview(lambda tx: records.list_keys(tx, ns, self.name))
        for rec in recs:
            info = _info(rec)
            if flt.match(info_adaptor(info)):
                yield info

    async def cleanup(self) -> None:
        """Let the backend reclaim space of removed snapshots."""
        if isinstance(self.backend, Cleaner):
            await self.backend.cleanup()

    async def close(self) -> None:
        """Nothing to release: the backend is closed by its own plugin."""
