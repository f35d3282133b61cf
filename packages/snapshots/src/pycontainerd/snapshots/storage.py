"""The private metadata of a directory-based snapshotter (containerd's ``snapshots/storage``).

Each snapshotter keeps a small SQLite file (``metadata.db``) in its own root:
one row per snapshot with a numeric id that names its directory
(``snapshots/<id>``), its key, kind, parent and labels. Committing keeps the
id, so a committed layer never moves on disk. Every change runs in one
``BEGIN IMMEDIATE`` transaction; the file runs in WAL mode with
``synchronous=FULL``, so a crash leaves either the old or the new state.

All methods are blocking; snapshotters call them from a worker thread,
together with the filesystem work of the same operation.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from pycontainerd.core import labels as core_labels
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.snapshots import Info, Kind, Usage

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from pathlib import Path

__all__ = ["MetaStore", "Snapshot", "Tx"]

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS snapshots ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " key TEXT NOT NULL UNIQUE,"
    " kind INTEGER NOT NULL,"
    " parent_id INTEGER REFERENCES snapshots (id),"
    " labels TEXT NOT NULL DEFAULT '{}',"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " inodes INTEGER NOT NULL DEFAULT 0,"
    " size INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS snapshots_by_parent ON snapshots (parent_id)",
)


#: A snapshot's id and those of its ancestors, nearest first.
_CHAIN_SQL: Final = (
    "WITH RECURSIVE chain (id, parent_id, depth) AS ("
    " SELECT id, parent_id, 0 FROM snapshots WHERE id = ?"
    " UNION ALL"
    " SELECT s.id, s.parent_id, chain.depth + 1 FROM snapshots AS s"
    " JOIN chain ON s.id = chain.parent_id)"
    " SELECT id FROM chain ORDER BY depth"
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot as its snapshotter needs it: the id and the ids of its parents.

    Attributes:
        id: the directory name, as text.
        kind: active, view or committed.
        parent_ids: ids of the parent chain, nearest first.
    """

    id: str
    kind: Kind
    parent_ids: tuple[str, ...]


def _to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(
        microsecond=(ns // 1000) % 1_000_000
    )


def _labels(labels: Mapping[str, str] | None) -> str:
    if not labels:
        return "{}"
    core_labels.validate_all(labels)
    return json.dumps(dict(labels), sort_keys=True)


class Tx:
    """One transaction on the store (read or write)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def _row(self, key: str) -> tuple[int, int, int | None, str, int, int]:
        row = self.conn.execute(
            "SELECT id, kind, parent_id, labels, created_at, updated_at FROM snapshots"
            " WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            msg = f"snapshot {key!r} does not exist"
            raise NotFoundError(msg)
        return row  # type: ignore[no-any-return]

    def _key_of(self, sid: int | None) -> str:
        if sid is None:
            return ""
        row = self.conn.execute("SELECT key FROM snapshots WHERE id = ?", (sid,)).fetchone()
        return str(row[0]) if row else ""

    def _chain(self, sid: int | None) -> tuple[str, ...]:
        """``sid`` and its ancestors' ids, nearest first (one query, however deep)."""
        if sid is None:
            return ()
        rows = self.conn.execute(_CHAIN_SQL, (sid,)).fetchall()
        return tuple(str(row[0]) for row in rows)

    def get_snapshot(self, key: str) -> Snapshot:
        """Id, kind and parent ids of ``key``.

        Raises:
            NotFoundError: no such snapshot.
        """
        sid, kind, parent_id, *_ = self._row(key)
        return Snapshot(str(sid), Kind(kind), self._chain(parent_id))

    def get_info(self, key: str) -> tuple[str, Info, Usage]:
        """Id, info and recorded usage of ``key``."""
        sid, kind, parent_id, labels, created, updated = self._row(key)
        size, inodes = self.conn.execute(
            "SELECT size, inodes FROM snapshots WHERE id = ?", (sid,)
        ).fetchone()
        info = Info(
            kind=Kind(kind),
            name=key,
            parent=self._key_of(parent_id),
            labels=json.loads(labels),
            created_at=_to_datetime(created),
            updated_at=_to_datetime(updated),
        )
        return str(sid), info, Usage(inodes=inodes, size=size)

    def create(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> Snapshot:
        """Record a new active or view snapshot.

        Raises:
            InvalidArgumentError: bad kind, empty key, parent not committed, bad labels.
            AlreadyExistsError: ``key`` is taken.
            NotFoundError: ``parent`` does not exist.
        """
        if kind not in (Kind.ACTIVE, Kind.VIEW):
            msg = (
                f"snapshot type {kind} invalid; "
                "only snapshots of type Active or View can be created"
            )
            raise InvalidArgumentError(msg)
        if not key:
            msg = "snapshot key must not be empty"
            raise InvalidArgumentError(msg)
        encoded = _labels(labels)
        parent_id: int | None = None
        if parent:
            row = self.conn.execute(
                "SELECT id, kind FROM snapshots WHERE key = ?", (parent,)
            ).fetchone()
            if row is None:
                msg = f"missing parent {parent!r} bucket"
                raise NotFoundError(msg)
            if Kind(row[1]) is not Kind.COMMITTED:
                msg = f"parent {parent!r} is not committed snapshot"
                raise InvalidArgumentError(msg)
            parent_id = int(row[0])
        now = time.time_ns()
        try:
            cur = self.conn.execute(
                "INSERT INTO snapshots (key, kind, parent_id, labels, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, int(kind), parent_id, encoded, now, now),
            )
        except sqlite3.IntegrityError as exc:
            msg = f"snapshot {key!r}"
            raise AlreadyExistsError(msg) from exc
        return Snapshot(str(cur.lastrowid), kind, self._chain(parent_id))

    def commit(self, key: str, name: str, usage: Usage, labels: Mapping[str, str] | None) -> str:
        """Turn active ``key`` into committed ``name`` (same id); return the id.

        Raises:
            NotFoundError: ``key`` does not exist.
            FailedPreconditionError: ``key`` is not active.
            AlreadyExistsError: ``name`` is taken.
        """
        if not name:
            msg = "snapshot name must not be empty"
            raise InvalidArgumentError(msg)
        sid, kind, _parent, old_labels, _created, _updated = self._row(key)
        if Kind(kind) is not Kind.ACTIVE:
            msg = f"snapshot {key!r} is not active"
            raise FailedPreconditionError(msg)
        encoded = _labels(labels) if labels is not None else old_labels
        now = time.time_ns()
        try:
            self.conn.execute(
                "UPDATE snapshots SET key = ?, kind = ?, labels = ?, created_at = ?,"
                " updated_at = ?, size = ?, inodes = ? WHERE id = ?",
                (name, int(Kind.COMMITTED), encoded, now, now, usage.size, usage.inodes, sid),
            )
        except sqlite3.IntegrityError as exc:
            msg = f"snapshot {name!r}"
            raise AlreadyExistsError(msg) from exc
        return str(sid)

    def remove(self, key: str) -> tuple[str, Kind]:
        """Forget ``key``; return its id and kind.

        Raises:
            NotFoundError: no such snapshot.
            FailedPreconditionError: another snapshot is based on it.
        """
        sid, kind, *_ = self._row(key)
        child = self.conn.execute(
            "SELECT 1 FROM snapshots WHERE parent_id = ? LIMIT 1", (sid,)
        ).fetchone()
        if child is not None:
            msg = f"cannot remove snapshot {key!r} with child"
            raise FailedPreconditionError(msg)
        self.conn.execute("DELETE FROM snapshots WHERE id = ?", (sid,))
        return str(sid), Kind(kind)

    def update_info(self, info: Info, fieldpaths: Sequence[str]) -> Info:
        """Replace (no paths) or patch (``labels``, ``labels.<key>``) the labels.

        Raises:
            NotFoundError: no such snapshot.
            InvalidArgumentError: another field is named, or a label is invalid.
        """
        _sid, current, _usage = self.get_info(info.name)
        labels = dict(current.labels)
        if not fieldpaths:
            labels = dict(info.labels)
        for path in fieldpaths:
            if path.startswith("labels."):
                key = path.removeprefix("labels.")
                if key in info.labels:
                    labels[key] = info.labels[key]
                else:
                    labels.pop(key, None)
            elif path == "labels":
                labels = dict(info.labels)
            else:
                msg = f"cannot update {path!r} field on snapshot {info.name!r}"
                raise InvalidArgumentError(msg)
        encoded = _labels(labels)
        self.conn.execute(
            "UPDATE snapshots SET labels = ?, updated_at = ? WHERE key = ?",
            (encoded, time.time_ns(), info.name),
        )
        return self.get_info(info.name)[1]

    def all_keys(self) -> list[str]:
        """Every key, oldest first."""
        return [str(r[0]) for r in self.conn.execute("SELECT key FROM snapshots ORDER BY id")]

    def ids(self) -> set[str]:
        """Every id in use."""
        return {str(r[0]) for r in self.conn.execute("SELECT id FROM snapshots")}


class MetaStore:
    """The SQLite file of one snapshotter.

    One connection, used by one thread at a time (a lock); writes also take
    ``BEGIN IMMEDIATE``, so another process on the same root waits its turn.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, timeout=10.0, check_same_thread=False
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            msg = f"snapshot metadata {self.path} is closed"
            raise FailedPreconditionError(msg)
        return self._conn

    @contextlib.contextmanager
    def update(self) -> Iterator[Tx]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def view(self) -> Iterator[Tx]:
        """A read transaction."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                yield Tx(conn)
            finally:
                conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection; later calls raise ``FailedPreconditionError``."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
