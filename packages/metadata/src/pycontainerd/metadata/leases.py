"""Leases and the resources they hold.

A lease keeps what it references alive for the garbage collector: blobs
(``content``), ingests in progress (``ingests``), snapshots
(``snapshots/<snapshotter>``) and, as in containerd 2.0, images (``images``).
Labels ``containerd.io/gc.expire`` and ``containerd.io/gc.flat`` are stored
here and interpreted by the collector.

Stores that create resources call :func:`attach` inside their write
transaction with the lease of the request (``containerd-lease`` header,
``pycontainerd.core.namespaces.lease()``), so the resource and its lease
reference commit together.

Importing this module must not import grpc.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import TYPE_CHECKING, Final

from pycontainerd.core import digests, filters
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.leases import EXPIRE_LABEL, FLAT_LABEL, Lease, Resource
from pycontainerd.core.namespaces import namespace_required
from pycontainerd.metadata._rows import (
    RecordTable,
    dump_map,
    ensure_namespace,
    list_matching,
    load_map,
    ns_to_datetime,
)
from pycontainerd.metadata._rows import validate_labels as _validate_labels
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterator, Mapping

    from pycontainerd.metadata.db import MetadataDB, Tx

CONTENT: Final = "content"
INGESTS: Final = "ingests"
IMAGES: Final = "images"
SNAPSHOTS_PREFIX: Final = "snapshots/"

__all__ = [
    "CONTENT",
    "EXPIRE_LABEL",
    "FLAT_LABEL",
    "IMAGES",
    "INGESTS",
    "SNAPSHOTS_PREFIX",
    "LeaseStore",
    "attach",
    "check_resource",
    "detach",
    "random_id",
]


def random_id() -> str:
    """A lease id as containerd's server makes them: ``<ns of this second>-<4 chars>``."""
    nanos = time.time_ns() % 1_000_000_000
    return f"{nanos}-{base64.urlsafe_b64encode(secrets.token_bytes(3)).decode()}"


def lease_adaptor(lease: Lease) -> filters.Adaptor:
    """Filter fields: ``id``, ``labels.<key>``."""
    return filters.adapt({"id": lease.id or None, "labels": filters.joined_map(lease.labels)})


def check_resource(r: Resource) -> Resource:
    """Validate a resource's type and id; content ids are digests.

    Raises:
        InvalidArgumentError: a malformed type or content digest.
        UnimplementedError: an unknown type (``resource type X not supported yet``).
    """
    parts = r.type.split("/")
    kind = parts[0]
    if kind in (CONTENT, INGESTS, IMAGES):
        if len(parts) != 1:
            msg = f"invalid resource type {r.type}"
            raise InvalidArgumentError(msg)
        if kind == CONTENT:
            try:
                digests.parse(r.id)
            except InvalidArgumentError as exc:
                msg = f"invalid content resource id {r.id}: {exc.message.rsplit(': ', 1)[-1]}"
                raise InvalidArgumentError(msg) from exc
    elif kind == "snapshots":
        if len(parts) != 2 or not parts[1]:
            msg = f"invalid snapshot resource type {r.type}"
            raise InvalidArgumentError(msg)
    else:
        msg = f"resource type {r.type} not supported yet"
        raise UnimplementedError(msg)
    if not r.id:
        msg = f"resource id must be set for type {r.type}"
        raise InvalidArgumentError(msg)
    return r


_TABLE: Final = RecordTable("leases", ("id", "labels", "created_at"))


def _all(tx: Tx, namespace: str) -> Iterator[Lease]:
    for r in _TABLE.all(tx, namespace):
        yield Lease(id=r[0], labels=load_map(r[1]), created_at=ns_to_datetime(r[2]))


def _require_lease(tx: Tx, namespace: str, lease_id: str) -> None:
    if not _TABLE.exists(tx, namespace, lease_id):
        msg = f"lease {go_quote(lease_id)}"
        raise NotFoundError(msg)


def attach(tx: Tx, namespace: str, lease_id: str | None, rtype: str, rid: str) -> None:
    """Reference ``rtype``/``rid`` from ``lease_id`` (no-op without a lease).

    Raises:
        NotFoundError: ``lease does not exist`` (the header names an unknown lease).
    """
    if not lease_id:
        return
    exists = tx.execute(
        "SELECT 1 FROM leases WHERE namespace = ? AND id = ?", (namespace, lease_id)
    ).fetchone()
    if exists is None:
        msg = "lease does not exist"
        raise NotFoundError(msg)
    tx.execute(
        "INSERT OR IGNORE INTO lease_resources (namespace, lease_id, type, id) VALUES (?, ?, ?, ?)",
        (namespace, lease_id, rtype, rid),
    )


def detach(tx: Tx, namespace: str, lease_id: str | None, rtype: str, rid: str) -> None:
    """Drop ``rtype``/``rid`` from ``lease_id`` if it is there."""
    if not lease_id:
        return
    tx.execute(
        "DELETE FROM lease_resources WHERE namespace = ? AND lease_id = ? AND type = ? AND id = ?",
        (namespace, lease_id, rtype, rid),
    )


class LeaseStore:
    """Leases of the current namespace (containerd's lease manager)."""

    def __init__(self, db: MetadataDB) -> None:
        self._db = db

    async def create(self, lease_id: str = "", *, labels: Mapping[str, str] | None = None) -> Lease:
        """Create a lease; an empty id gets a random one.

        Raises:
            InvalidArgumentError: a label is too large.
            AlreadyExistsError: ``lease "<id>": already exists``.
        """
        ns = namespace_required()
        lease_id = lease_id or random_id()
        labels = {k: v for k, v in (labels or {}).items() if v != ""}
        _validate_labels(labels, "lease.Labels")

        def run(tx: Tx) -> Lease:
            ensure_namespace(tx, ns)
            now = now_ns()
            cur = tx.execute(
                "INSERT INTO leases (namespace, id, labels, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (ns, lease_id, dump_map(labels), now),
            )
            if cur.rowcount == 0:
                msg = f"lease {go_quote(lease_id)}"
                raise AlreadyExistsError(msg)
            return Lease(id=lease_id, labels=labels, created_at=ns_to_datetime(now))

        return await self._db.aupdate_point(run)

    async def delete(self, lease_id: str, *, sync: bool = False) -> None:
        """Delete a lease; what it held becomes collectable.

        With ``sync``, wait for a garbage collection afterwards
        (``MetadataDB.wait_for_gc``).

        Raises:
            NotFoundError: ``lease "<id>": not found``.
        """
        await _TABLE.delete(self._db, namespace_required(), lease_id, f"lease {go_quote(lease_id)}")
        if sync:
            await self._db.wait_for_gc()

    async def list(self, *fs: str) -> list[Lease]:
        """Leases matching any of ``fs`` (all when none), sorted by id.

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        return await list_matching(self._db, fs, lease_adaptor, _all)

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        """Make ``lease_id`` hold ``resource`` (idempotent); raises as :meth:`delete_resource`."""

        def add(tx: Tx, ns: str) -> None:
            tx.execute(
                "INSERT OR IGNORE INTO lease_resources (namespace, lease_id, type, id)"
                " VALUES (?, ?, ?, ?)",
                (ns, lease_id, resource.type, resource.id),
            )

        await self._change_resources(lease_id, resource, add)

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        """Stop ``lease_id`` holding ``resource`` (no error if it did not).

        Raises:
            InvalidArgumentError, UnimplementedError: a bad resource.
            NotFoundError: ``lease "<id>": not found``.
        """

        def delete(tx: Tx, ns: str) -> None:
            cur = tx.execute(
                "DELETE FROM lease_resources WHERE namespace = ? AND lease_id = ?"
                " AND type = ? AND id = ?",
                (ns, lease_id, resource.type, resource.id),
            )
            if cur.rowcount:
                tx.mark_dirty()

        await self._change_resources(lease_id, resource, delete)

    async def _change_resources(
        self, lease_id: str, resource: Resource, change: Callable[[Tx, str], None]
    ) -> None:
        """Check ``resource``, then ``change(tx, namespace)`` once the lease is known to exist."""
        ns = namespace_required()
        check_resource(resource)

        def run(tx: Tx) -> None:
            _require_lease(tx, ns, lease_id)
            change(tx, ns)

        await self._db.aupdate_point(run)

    async def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        """What ``lease_id`` holds: content, then ingests, images, snapshots.

        Raises:
            NotFoundError: ``lease "<id>": not found``.
        """
        ns = namespace_required()

        def run(tx: Tx) -> builtins.list[Resource]:
            _require_lease(tx, ns, lease_id)
            rows = tx.execute(
                "SELECT type, id FROM lease_resources WHERE namespace = ? AND lease_id = ?"
                " ORDER BY CASE type WHEN 'content' THEN 0 WHEN 'ingests' THEN 1"
                " WHEN 'images' THEN 2 ELSE 3 END, type, id",
                (ns, lease_id),
            )
            return [Resource(type=t, id=i) for t, i in rows]

        return await self._db.aview(run)
