"""Namespaces: their labels, and deletion only when nothing is left in them.

Unlike the object stores, namespace operations name their target explicitly
(the caller's own namespace does not matter), as containerd's namespaces
store does. A namespace comes into being on the first write in it, as in
containerd: every store creates it with its first row, and updating or
setting a label of a namespace that does not exist creates it (containerd's
own test harness labels a namespace it never created, then uses it).

One upstream quirk is fixed here: reading the labels of a namespace that does
not exist raises NotFound instead of returning empty labels.

Importing this module must not import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycontainerd.core import identifiers
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.metadata._rows import (
    apply_map_paths,
    dump_map,
    ensure_namespace,
    load_map,
    prefixed,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pycontainerd.metadata.db import MetadataDB, Tx


@dataclass(frozen=True, slots=True, kw_only=True)
class Namespace:
    """A namespace and its labels."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"namespace {go_quote(name)}")


def _validate_name(name: str) -> None:
    with prefixed("namespace validation"):
        identifiers.validate(name)


def _labels_of(tx: Tx, name: str) -> dict[str, str]:
    row = tx.execute("SELECT labels FROM namespaces WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise _not_found(name)
    return load_map(row[0])


def remaining(tx: Tx, name: str) -> list[str]:
    """What still lives in ``name``, in containerd's order and wording."""
    out: list[str] = []
    for table, what in (("images", "images"), ("blobs", "blobs"), ("containers", "containers")):
        if tx.execute(f"SELECT 1 FROM {table} WHERE namespace = ? LIMIT 1", (name,)).fetchone():  # noqa: S608 - fixed table names
            out.append(what)
    out.extend(
        f"snapshots on {go_quote(row[0])} snapshotter"
        for row in tx.execute(
            "SELECT DISTINCT snapshotter FROM snapshots WHERE namespace = ? ORDER BY snapshotter",
            (name,),
        )
    )
    return out


class NamespaceStore:
    """Namespaces in the metadata database.

    Args:
        db: the database.
    """

    def __init__(self, db: MetadataDB) -> None:
        self._db = db

    async def create(self, name: str, labels: Mapping[str, str] | None = None) -> Namespace:
        """Create ``name`` with ``labels``.

        Raises:
            InvalidArgumentError: bad name or labels.
            AlreadyExistsError: ``namespace "<name>": already exists``.
        """
        _validate_name(name)
        labels = {k: v for k, v in (labels or {}).items() if v != ""}
        validate_labels(labels, "namespace.Labels")

        def run(tx: Tx) -> Namespace:
            now = now_ns()
            cur = tx.execute(
                "INSERT INTO namespaces (name, labels, created_at, updated_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
                (name, dump_map(labels), now, now),
            )
            if cur.rowcount == 0:
                msg = f"namespace {go_quote(name)}"
                raise AlreadyExistsError(msg)
            return Namespace(name=name, labels=labels)

        return await self._db.aupdate_point(run)

    async def get(self, name: str) -> Namespace:
        """The namespace ``name`` with its labels.

        Raises:
            NotFoundError: it does not exist.
        """
        _validate_name(name)
        labels = await self._db.aview(lambda tx: _labels_of(tx, name))
        return Namespace(name=name, labels=labels)

    async def list(self) -> list[Namespace]:
        """Every namespace, sorted by name."""

        def run(tx: Tx) -> list[Namespace]:
            return [
                Namespace(name=row[0], labels=load_map(row[1]))
                for row in tx.execute("SELECT name, labels FROM namespaces ORDER BY name")
            ]

        return await self._db.aview(run)

    async def update(
        self, name: str, labels: Mapping[str, str], paths: Sequence[str] = ()
    ) -> Namespace:
        """Update labels of ``name``; with no ``paths`` the labels are replaced.

        ``paths`` are field-mask paths; only ``labels.<key>`` is accepted. A key
        whose new value is absent or empty is removed.

        A namespace that does not exist is created with the new labels, as
        containerd's label writes create its bucket.

        Raises:
            InvalidArgumentError: a bad name, a path other than
                ``labels.<key>``, or a bad label.
        """
        _validate_name(name)
        keys: list[str] = []
        for path in paths:
            if not path.startswith("labels.") or path == "labels.":
                msg = f"cannot update {go_quote(path)} field"
                raise InvalidArgumentError(msg)
            keys.append(path.removeprefix("labels."))

        def run(tx: Tx) -> Namespace:
            ensure_namespace(tx, name)
            current = _labels_of(tx, name)
            if paths:
                new = apply_map_paths(current, labels, keys)
            else:
                new = {k: v for k, v in labels.items() if v != ""}
            validate_labels(new, "namespace.Labels")
            tx.execute(
                "UPDATE namespaces SET labels = ?, updated_at = ? WHERE name = ?",
                (dump_map(new), now_ns(), name),
            )
            return Namespace(name=name, labels=new)

        return await self._db.aupdate_point(run)

    async def set_label(self, name: str, key: str, value: str) -> Namespace:
        """Set one label (``""`` removes it), creating the namespace; see :meth:`update`."""
        return await self.update(name, {key: value}, [f"labels.{key}"])

    async def delete(self, name: str) -> None:
        """Delete ``name`` if it holds no images, blobs, containers or snapshots.

        Leases and ingests do not keep a namespace alive; they go with it.

        Raises:
            NotFoundError: ``namespace "<name>": not found``.
            FailedPreconditionError: ``namespace "<name>" must be empty, but it
                still has images, blobs, ...``.
        """
        _validate_name(name)

        def run(tx: Tx) -> None:
            if tx.execute("SELECT 1 FROM namespaces WHERE name = ?", (name,)).fetchone() is None:
                raise _not_found(name)
            left = remaining(tx, name)
            if left:
                msg = (
                    f"namespace {go_quote(name)} must be empty, but it still has {', '.join(left)}"
                )
                raise FailedPreconditionError(msg)
            tx.execute("DELETE FROM namespaces WHERE name = ?", (name,))
            tx.mark_dirty()  # its leases and ingests are gone

        await self._db.aupdate_point(run)
