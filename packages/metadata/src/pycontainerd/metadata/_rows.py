"""Helpers shared by the stores: JSON maps, namespaces rows, sequences, masks, record tables.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from pycontainerd.core import filters
from pycontainerd.core import labels as labels_mod
from pycontainerd.core.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import namespace_required
from pycontainerd.core.types import AnyValue
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

    from pycontainerd.metadata.db import MetadataDB, Tx

T = TypeVar("T")


def dump_map(m: Mapping[str, str] | None) -> str:
    """A string map as stored: JSON with sorted keys, empty values dropped.

    containerd never stores a label with an empty value: setting a label to
    ``""`` removes it.
    """
    if not m:
        return "{}"
    return json.dumps({k: v for k, v in m.items() if v != ""}, sort_keys=True)


def load_map(raw: str | None) -> dict[str, str]:
    """The inverse of :func:`dump_map`."""
    if not raw or raw == "{}":
        return {}
    loaded: dict[str, str] = json.loads(raw)
    return loaded


def validate_labels(labels: Mapping[str, str], prefix: str) -> None:
    """Validate every label, prefixing the error like containerd (``image.Labels: ...``).

    Raises:
        InvalidArgumentError: a label is too large.
    """
    with prefixed(prefix):
        for key, value in labels.items():
            labels_mod.validate(key, value)


@contextlib.contextmanager
def prefixed(prefix: str) -> Iterator[None]:
    """Re-raise an InvalidArgumentError of the block as ``<prefix>: <its message>``.

    Raises:
        InvalidArgumentError: the block's, prefixed (containerd's wrapping).
    """
    try:
        yield
    except InvalidArgumentError as exc:
        msg = f"{prefix}: {exc.message}"
        raise InvalidArgumentError(msg) from exc


def ns_to_datetime(ns: int) -> datetime:
    """Stored nanoseconds -> an aware UTC datetime (microsecond precision)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


def to_ns(when: datetime) -> int:
    """An aware datetime -> nanoseconds since the epoch (as stored)."""
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ensure_namespace(tx: Tx, namespace: str) -> None:
    """Create ``namespace`` if it does not exist (writes create namespaces implicitly)."""
    now = now_ns()
    tx.execute(
        "INSERT OR IGNORE INTO namespaces (name, created_at, updated_at) VALUES (?, ?, ?)",
        (namespace, now, now),
    )


def next_sequence(tx: Tx, name: str) -> int:
    """Increment and return the counter ``name`` (starts at 1)."""
    row = tx.execute(
        "INSERT INTO sequences (name, value) VALUES (?, 1)"
        " ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
        (name,),
    ).fetchone()
    return int(row[0])


def apply_map_paths(
    current: Mapping[str, str], requested: Mapping[str, str], keys: list[str]
) -> dict[str, str]:
    """Set ``keys`` of ``current`` from ``requested`` (absent or empty -> removed)."""
    out = dict(current)
    for key in keys:
        value = requested.get(key, "")
        if value:
            out[key] = value
        else:
            out.pop(key, None)
    return out


async def list_matching(
    db: MetadataDB,
    fs: Sequence[str],
    adaptor: Callable[[T], filters.Adaptor],
    read: Callable[[Tx, str], Iterable[T]],
) -> list[T]:
    """What ``read(tx, namespace)`` finds in the current namespace, filtered by ``fs``.

    A record is kept when it matches any of the filters (all are, when there
    are none); the order is ``read``'s. One read transaction on the pool.

    Raises:
        InvalidArgumentError: a filter does not parse.
    """
    ns = namespace_required()
    match = matcher(fs, adaptor)
    return await db.aview(lambda tx: [r for r in read(tx, ns) if match(r)])


def matcher(fs: Sequence[str], adaptor: Callable[[T], filters.Adaptor]) -> Callable[[T], bool]:
    """Compile request filters into a predicate over store objects.

    Raises:
        InvalidArgumentError: a filter does not parse.
    """
    parsed = filters.parse(*fs)
    if isinstance(parsed, filters.Always):
        return lambda _obj: True
    return lambda obj: parsed.match(adaptor(obj))


def any_value(type_url: str | None, value: bytes | None) -> AnyValue | None:
    """An ``Any`` from its two stored columns (``None`` when no type is stored)."""
    if type_url is None:
        return None
    return AnyValue(type_url=type_url, value=bytes(value or b""))


def apply_map_path(
    path: str,
    labels: dict[str, str],
    extensions: dict[str, AnyValue],
    requested: tuple[Mapping[str, str], Mapping[str, AnyValue]],
) -> bool:
    """Apply one field-mask path about ``labels`` or ``extensions`` in place.

    Handles ``labels``, ``labels.<key>``, ``extensions`` and ``extensions.<name>``
    from ``requested`` (its labels and extensions); False for any other path.
    """
    req_labels, req_extensions = requested
    head, dot, key = path.partition(".")
    if head == "labels":
        if not dot:
            labels.clear()
            labels.update(req_labels)
        elif req_labels.get(key, ""):
            labels[key] = req_labels[key]
        else:
            labels.pop(key, None)
        return True
    if head == "extensions":
        if not dot:
            extensions.clear()
            extensions.update(req_extensions)
        elif key in req_extensions:
            extensions[key] = req_extensions[key]
        else:
            extensions.pop(key, None)
        return True
    return False


class Record(Protocol):
    """A record with labels and extensions (a container, a sandbox)."""

    @property
    def id(self) -> str: ...
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def extensions(self) -> Mapping[str, AnyValue]: ...


R = TypeVar("R", bound=Record)


def update_paths(
    paths: Sequence[str], full: Sequence[str], immutable: Iterable[tuple[object, object, str]]
) -> Sequence[str]:
    """The field mask of an update: ``paths``, or with none every path of ``full``.

    Without paths the whole record is replaced, so each ``(current, requested,
    name)`` of ``immutable`` must be unchanged.

    Raises:
        InvalidArgumentError: ``<name> field is immutable``.
    """
    if paths:
        return paths
    for current, requested, name in immutable:
        if current != requested:
            msg = f"{name} field is immutable"
            raise InvalidArgumentError(msg)
    return full


def apply_mask(
    current: R,
    req: R,
    paths: Iterable[str],
    fields: Mapping[str, Callable[[R, R], R]],
    what: str,
) -> R:
    """``current`` with the field-mask ``paths`` set from ``req``.

    Labels and extensions paths are handled here (:func:`apply_map_path`),
    every other path by ``fields[path](record, req)``; empty labels are dropped.

    Raises:
        InvalidArgumentError: ``cannot update "<path>" field on <what>"<id>"``.
    """
    labels = dict(current.labels)
    extensions = dict(current.extensions)
    out = current
    for path in paths:
        if apply_map_path(path, labels, extensions, (req.labels, req.extensions)):
            continue
        set_field = fields.get(path)
        if set_field is None:
            msg = f"cannot update {go_quote(path)} field on {what}{go_quote(req.id)}"
            raise InvalidArgumentError(msg)
        out = set_field(out, req)
    labels = {k: v for k, v in labels.items() if v != ""}
    return dataclasses.replace(out, labels=labels, extensions=extensions)  # type: ignore[type-var]


@dataclass(frozen=True, slots=True)
class RecordTable:
    """A table of records keyed by ``(namespace, id)``, with their extensions table.

    Attributes:
        name: the table.
        columns: its columns after ``namespace``, ``id`` first.
        owner: the records' name in the singular (``container``): the extensions
            live in ``<owner>_extensions``, keyed by ``<owner>_id``. Empty: none.
    """

    name: str
    columns: tuple[str, ...]
    owner: str = ""

    def get(self, tx: Tx, namespace: str, key: str) -> tuple[Any, ...] | None:
        """The row ``key`` (its columns in order), None when there is none."""
        row: tuple[Any, ...] | None = tx.execute(
            f"SELECT {', '.join(self.columns)} FROM {self.name}"  # noqa: S608 - fixed names
            " WHERE namespace = ? AND id = ?",
            (namespace, key),
        ).fetchone()
        return row

    def all(self, tx: Tx, namespace: str) -> Iterable[tuple[Any, ...]]:
        """Every row of ``namespace``, sorted by id."""
        rows: Iterable[tuple[Any, ...]] = tx.execute(
            f"SELECT {', '.join(self.columns)} FROM {self.name}"  # noqa: S608 - fixed names
            " WHERE namespace = ? ORDER BY id",
            (namespace,),
        )
        return rows

    def exists(self, tx: Tx, namespace: str, key: str) -> bool:
        """Whether the row ``key`` exists."""
        return (
            tx.execute(
                f"SELECT 1 FROM {self.name} WHERE namespace = ? AND id = ?",  # noqa: S608
                (namespace, key),
            ).fetchone()
            is not None
        )

    def write(
        self,
        tx: Tx,
        namespace: str,
        values: tuple[Any, ...],
        extensions: Mapping[str, AnyValue],
        *,
        insert: bool,
    ) -> None:
        """Insert or replace the row ``values`` (one per column, the id first) and its
        extensions.
        """  # noqa: D205
        key = values[0]
        if insert:
            marks = ", ".join("?" * (len(values) + 1))
            tx.execute(
                f"INSERT INTO {self.name} (namespace, {', '.join(self.columns)})"  # noqa: S608
                f" VALUES ({marks})",
                (namespace, *values),
            )
        else:
            sets = ", ".join(f"{c} = ?" for c in self.columns[1:])
            tx.execute(
                f"UPDATE {self.name} SET {sets} WHERE namespace = ? AND id = ?",  # noqa: S608
                (*values[1:], namespace, key),
            )
            tx.execute(
                f"DELETE FROM {self.owner}_extensions"  # noqa: S608 - fixed names
                f" WHERE namespace = ? AND {self.owner}_id = ?",
                (namespace, key),
            )
        tx.executemany(
            f"INSERT INTO {self.owner}_extensions"  # noqa: S608 - fixed names
            f" (namespace, {self.owner}_id, name, type_url, value) VALUES (?, ?, ?, ?, ?)",
            [(namespace, key, name, a.type_url, a.value) for name, a in extensions.items()],
        )

    async def create(
        self,
        db: MetadataDB,
        record: R,
        values: Callable[[R], tuple[Any, ...]],
        exists: str,
        stamp: Callable[[R], R] = lambda r: r,
    ) -> R:
        """Store the new ``record`` (``stamp`` ed in the transaction) in the current namespace.

        The namespace is created with it; ``values`` gives its row.

        Raises:
            AlreadyExistsError: ``exists``, the id is taken.
        """
        ns = namespace_required()

        def run(tx: Tx) -> R:
            created = stamp(record)
            ensure_namespace(tx, ns)
            if self.exists(tx, ns, created.id):
                raise AlreadyExistsError(exists)
            self.write(tx, ns, values(created), created.extensions, insert=True)
            return created

        return await db.aupdate_point(run)

    def read(
        self,
        tx: Tx,
        namespace: str,
        key: str,
        from_row: Callable[[tuple[Any, ...], Mapping[str, AnyValue]], T],
        missing: str,
    ) -> T:
        """The record ``key`` (``from_row`` of its row and extensions).

        Raises:
            NotFoundError: ``missing``, there is none.
        """
        row = self.get(tx, namespace, key)
        if row is None:
            raise NotFoundError(missing)
        return from_row(row, self.extensions(tx, namespace, key).get(key, {}))

    def extensions(
        self, tx: Tx, namespace: str, key: str | None = None
    ) -> dict[str, dict[str, AnyValue]]:
        """Extensions by record id: of ``key``, or (None) of the whole namespace at once."""
        query = (
            f"SELECT {self.owner}_id, name, type_url, value FROM {self.owner}_extensions"  # noqa: S608
            " WHERE namespace = ?"
        )
        args: tuple[str, ...] = (namespace,)
        if key is not None:
            query += f" AND {self.owner}_id = ?"
            args = (namespace, key)
        out: dict[str, dict[str, AnyValue]] = {}
        for owner_id, name, type_url, value in tx.execute(query, args):
            out.setdefault(owner_id, {})[name] = AnyValue(type_url=type_url, value=bytes(value))
        return out

    async def delete(self, db: MetadataDB, namespace: str, key: str, not_found: str) -> None:
        """Delete the row ``key`` and mark the database dirty for the collector.

        Raises:
            NotFoundError: ``not_found`` (the message), the row does not exist.
        """

        def run(tx: Tx) -> None:
            cur = tx.execute(
                f"DELETE FROM {self.name} WHERE namespace = ? AND id = ?",  # noqa: S608
                (namespace, key),
            )
            if cur.rowcount == 0:
                raise NotFoundError(not_found)
            tx.mark_dirty()

        await db.aupdate_point(run)
