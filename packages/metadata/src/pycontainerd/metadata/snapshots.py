"""Namespaced snapshot keys: a namespace's key -> the backend snapshotter's key.

The bookkeeping a namespaced snapshotter needs, as functions of a write or
read transaction: the backend key is ``<ns>/<seq>/<key>`` (unique per
snapshotter, so namespaces never meet), plus parent, kind and labels per
namespace. The snapshotter wrapper that calls the backend around these is
not built yet; these functions are its storage.

Importing this module must not import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.metadata._rows import (
    dump_map,
    ensure_namespace,
    load_map,
    next_sequence,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns
from pycontainerd.metadata.leases import SNAPSHOTS_PREFIX, attach, detach

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycontainerd.metadata.db import Tx


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRecord:
    """A namespace's view of one snapshot."""

    snapshotter: str
    key: str
    backend_key: str
    parent: str = ""
    kind: str = "active"
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


_COLUMNS = "snapshotter, key, backend_key, parent, kind, labels, created_at, updated_at"


def _record(row: tuple[str, str, str, str, str, str, int, int]) -> SnapshotRecord:
    return SnapshotRecord(
        snapshotter=row[0],
        key=row[1],
        backend_key=row[2],
        parent=row[3],
        kind=row[4],
        labels=load_map(row[5]),
        created_at=row[6],
        updated_at=row[7],
    )


def get(tx: Tx, ns: str, snapshotter: str, key: str) -> SnapshotRecord:
    """The record of ``key``.

    Raises:
        NotFoundError: ``snapshot <key> does not exist``.
    """
    row = tx.execute(
        f"SELECT {_COLUMNS} FROM snapshots"  # noqa: S608
        " WHERE namespace = ? AND snapshotter = ? AND key = ?",
        (ns, snapshotter, key),
    ).fetchone()
    if row is None:
        msg = f"snapshot {key} does not exist"
        raise NotFoundError(msg)
    return _record(row)


def add(
    tx: Tx,
    ns: str,
    snapshotter: str,
    key: str,
    *,
    parent: str = "",
    kind: str = "active",
    labels: Mapping[str, str] | None = None,
    lease_id: str | None = None,
) -> SnapshotRecord:
    """Record a new snapshot and choose its backend key; the lease references it.

    Raises:
        InvalidArgumentError: empty key or a label too large.
        AlreadyExistsError: ``snapshot <key>: already exists``.
        NotFoundError: the parent is not in this namespace.
    """
    if not key:
        msg = "snapshot key must not be empty"
        raise InvalidArgumentError(msg)
    labels = {k: v for k, v in (labels or {}).items() if v != ""}
    validate_labels(labels, "snapshot.Labels")
    ensure_namespace(tx, ns)
    if parent:
        get(tx, ns, snapshotter, parent)
    seq = next_sequence(tx, f"snapshots/{snapshotter}")
    now = now_ns()
    rec = SnapshotRecord(
        snapshotter=snapshotter,
        key=key,
        backend_key=f"{ns}/{seq}/{key}",
        parent=parent,
        kind=kind,
        labels=labels,
        created_at=now,
        updated_at=now,
    )
    cur = tx.execute(
        f"INSERT INTO snapshots (namespace, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
        " ON CONFLICT DO NOTHING",
        (ns, snapshotter, key, rec.backend_key, parent, kind, dump_map(labels), now, now),
    )
    if cur.rowcount == 0:
        msg = f"snapshot {go_quote(key)}"
        raise AlreadyExistsError(msg)
    attach(tx, ns, lease_id, SNAPSHOTS_PREFIX + snapshotter, key)
    return rec


def remove(
    tx: Tx, ns: str, snapshotter: str, key: str, *, lease_id: str | None = None
) -> SnapshotRecord:
    """Forget ``key`` in the namespace (the GC removes the backend snapshot).

    Raises:
        NotFoundError: no such snapshot.
        FailedPreconditionError: it still has children.
    """
    rec = get(tx, ns, snapshotter, key)
    child = tx.execute(
        "SELECT 1 FROM snapshots WHERE namespace = ? AND snapshotter = ? AND parent = ? LIMIT 1",
        (ns, snapshotter, key),
    ).fetchone()
    if child is not None:
        msg = f"cannot remove snapshot with child: {key}"
        raise FailedPreconditionError(msg)
    tx.execute(
        "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
        (ns, snapshotter, key),
    )
    detach(tx, ns, lease_id, SNAPSHOTS_PREFIX + snapshotter, key)
    tx.mark_dirty()
    return rec


def list_keys(tx: Tx, ns: str, snapshotter: str) -> list[SnapshotRecord]:
    """Every snapshot of ``snapshotter`` in the namespace, by key."""
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM snapshots"  # noqa: S608
        " WHERE namespace = ? AND snapshotter = ? ORDER BY key",
        (ns, snapshotter),
    )
    return [_record(r) for r in rows]
