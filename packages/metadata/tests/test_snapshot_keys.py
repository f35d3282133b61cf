"""Namespaced snapshot key bookkeeping."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.metadata import snapshots

if TYPE_CHECKING:
    from pycontainerd.metadata.db import MetadataDB, Tx


def _lease(tx: Tx) -> None:
    tx.execute("INSERT INTO namespaces VALUES ('a', '{}', 0, 0)")
    tx.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('a', 'l', 0)")


def test_keys_are_namespaced_and_leased(db: MetadataDB) -> None:
    db.update(_lease)
    one = db.update(lambda tx: snapshots.add(tx, "a", "overlayfs", "k", lease_id="l"))
    two = db.update(lambda tx: snapshots.add(tx, "b", "overlayfs", "k"))
    assert one.backend_key != two.backend_key
    assert one.backend_key.startswith("a/")
    assert two.backend_key.startswith("b/")
    leased = db.view(lambda tx: tx.execute("SELECT type, id FROM lease_resources").fetchall())
    assert leased == [("snapshots/overlayfs", "k")]
    child = db.update(
        lambda tx: snapshots.add(tx, "a", "overlayfs", "c", parent="k", labels={"x": "y"})
    )
    assert db.view(lambda tx: snapshots.get(tx, "a", "overlayfs", "c")) == child
    assert [r.key for r in db.view(lambda tx: snapshots.list_keys(tx, "a", "overlayfs"))] == [
        "c",
        "k",
    ]
    with pytest.raises(AlreadyExistsError):
        db.update(lambda tx: snapshots.add(tx, "a", "overlayfs", "k"))
    with pytest.raises(NotFoundError, match="snapshot nope does not exist"):
        db.update(lambda tx: snapshots.add(tx, "a", "overlayfs", "x", parent="nope"))
    with pytest.raises(InvalidArgumentError):
        db.update(lambda tx: snapshots.add(tx, "a", "overlayfs", ""))
    with pytest.raises(FailedPreconditionError, match="with child"):
        db.update(lambda tx: snapshots.remove(tx, "a", "overlayfs", "k"))
    db.update(lambda tx: snapshots.remove(tx, "a", "overlayfs", "c"))
    db.update(lambda tx: snapshots.remove(tx, "a", "overlayfs", "k", lease_id="l"))
    assert db.view(lambda tx: snapshots.list_keys(tx, "a", "overlayfs")) == []
    assert db.dirty
