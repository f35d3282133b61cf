"""Helpers shared by the stores: JSON maps, namespaces rows, sequences, masks.

Importing this module must not import grpc.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from pycontainerd.core import filters
from pycontainerd.core import labels as labels_mod
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pycontainerd.metadata.db import Tx

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
    for key, value in labels.items():
        try:
            labels_mod.validate(key, value)
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


def matcher(fs: Sequence[str], adaptor: Callable[[T], filters.Adaptor]) -> Callable[[T], bool]:
    """Compile request filters into a predicate over store objects.

    Raises:
        InvalidArgumentError: a filter does not parse.
    """
    parsed = filters.parse(*fs)
    if isinstance(parsed, filters.Always):
        return lambda _obj: True
    return lambda obj: parsed.match(adaptor(obj))
