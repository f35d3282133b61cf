"""The namespaces store: labels, masks, implicit creation, NotFound, delete only when empty."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.metadata.namespaces import Namespace, NamespaceStore

if TYPE_CHECKING:
    from pycontainerd.metadata.db import MetadataDB, Tx

SNAPSHOTTER = "containerd.io/defaults/snapshotter"


async def test_create_get_list(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    await store.create("foo", {"mylabel": "bar", "empty": ""})
    await store.create("bar")
    got = await store.get("foo")
    assert dict(got.labels) == {"mylabel": "bar"}
    assert [(n.name, dict(n.labels)) for n in await store.list()] == [
        ("bar", {}),
        ("foo", {"mylabel": "bar"}),
    ]


async def test_create_duplicate(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    await store.create("n1")
    with pytest.raises(AlreadyExistsError) as info:
        await store.create("n1")
    assert str(info.value) == 'namespace "n1": already exists'


async def test_get_of_a_missing_namespace_is_not_found(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    with pytest.raises(NotFoundError) as info:
        await store.get("zz2")
    assert str(info.value) == 'namespace "zz2": not found'
    assert await store.list() == []  # get did not create it


@pytest.mark.parametrize(
    ("labels", "paths", "expected"),
    [
        ({SNAPSHOTTER: "native"}, [f"labels.{SNAPSHOTTER}"], {SNAPSHOTTER: "native"}),
        ({"a": "b"}, [], {"a": "b"}),  # no mask: replace all
        ({}, ["labels.gone"], {}),  # removing a label that is not there
    ],
)
async def test_update_of_a_missing_namespace_creates_it(
    db: MetadataDB, labels: dict[str, str], paths: list[str], expected: dict[str, str]
) -> None:
    """containerd's label writes create the namespace; its own test harness relies on it."""
    store = NamespaceStore(db)
    got = await store.update("fresh", labels, paths)
    assert got == Namespace(name="fresh", labels=expected)
    assert await store.get("fresh") == got
    assert await store.list() == [got]


async def test_set_label_of_a_missing_namespace_creates_it(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    await store.set_label("fresh", "k", "v")
    assert (await store.get("fresh")).labels == {"k": "v"}
    with pytest.raises(InvalidArgumentError, match="namespace validation"):
        await store.set_label("bad ns", "k", "v")
    with pytest.raises(InvalidArgumentError):
        await store.set_label("other", "k", "x" * 5000)
    assert [n.name for n in await store.list()] == ["fresh"]  # failed writes create nothing


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "namespace validation: identifier must not be empty: invalid argument"),
        ("bad ns", 'namespace validation: identifier "bad ns" must match'),
        ("a" * 77, "greater than maximum length (76 characters)"),
    ],
)
async def test_invalid_names(db: MetadataDB, name: str, message: str) -> None:
    store = NamespaceStore(db)
    with pytest.raises(InvalidArgumentError) as info:
        await store.create(name)
    assert message in str(info.value)


async def test_label_too_large(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    with pytest.raises(InvalidArgumentError) as info:
        await store.create("big", {"k": "v" * 4096})
    assert str(info.value).startswith(
        "namespace.Labels: label key and value length (4097 bytes) greater than maximum size"
    )
    assert await store.list() == []


async def test_update_with_mask_and_replace(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    await store.create("ns", {"a": "1", "b": "2"})
    got = await store.update("ns", {"b": "20", "c": "3"}, ["labels.b", "labels.a"])
    assert dict(got.labels) == {"b": "20"}  # a absent from the request -> removed
    assert dict((await store.get("ns")).labels) == {"b": "20"}
    got = await store.update("ns", {"x": "y"})
    assert dict(got.labels) == {"x": "y"}
    await store.set_label("ns", "x", "")
    assert dict((await store.get("ns")).labels) == {}


@pytest.mark.parametrize("path", ["name", "labels", "labels."])
async def test_update_rejects_other_paths(db: MetadataDB, path: str) -> None:
    store = NamespaceStore(db)
    await store.create("ns", {"a": "1"})
    with pytest.raises(InvalidArgumentError) as info:
        await store.update("ns", {}, [path])
    assert str(info.value) == f'cannot update "{path}" field: invalid argument'
    assert dict((await store.get("ns")).labels) == {"a": "1"}


async def test_update_with_oversized_label_changes_nothing(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    await store.create("ns", {"a": "1"})
    with pytest.raises(InvalidArgumentError):
        await store.update("ns", {"a": "x" * 5000}, ["labels.a"])
    assert dict((await store.get("ns")).labels) == {"a": "1"}


async def test_delete_missing(db: MetadataDB) -> None:
    with pytest.raises(NotFoundError) as info:
        await NamespaceStore(db).delete("zz2")
    assert str(info.value) == 'namespace "zz2": not found'


def _fill(tx: Tx) -> None:
    tx.execute("INSERT INTO blobs VALUES ('foo', 'sha256:' || hex(zeroblob(32)), 1, '{}', 0, 0)")


async def test_delete_non_empty_lists_what_remains_in_order(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    await store.create("foo")
    db.update(_fill)
    with pytest.raises(FailedPreconditionError) as info:
        await store.delete("foo")
    assert str(info.value) == (
        'namespace "foo" must be empty, but it still has blobs: failed precondition'
    )

    def more(tx: Tx) -> None:
        tx.execute(
            "INSERT INTO images VALUES ('foo', 'img', 'm', 'sha256:00', 1, '{}', '{}', 0, 0)"
        )
        tx.execute(
            "INSERT INTO containers (namespace, id, runtime_name, created_at, updated_at)"
            " VALUES ('foo', 'c1', 'rt', 0, 0)"
        )
        for sn in ("overlayfs", "native"):
            tx.execute(
                "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, kind,"
                " created_at, updated_at) VALUES ('foo', ?, 'k', ?, 'committed', 0, 0)",
                (sn, f"foo/1/{sn}"),
            )

    db.update(more)
    with pytest.raises(FailedPreconditionError) as info:
        await store.delete("foo")
    assert str(info.value) == (
        'namespace "foo" must be empty, but it still has images, blobs, containers, '
        'snapshots on "native" snapshotter, snapshots on "overlayfs" snapshotter: '
        "failed precondition"
    )


async def test_delete_takes_leases_and_ingests_along(db: MetadataDB) -> None:
    store = NamespaceStore(db)
    await store.create("foo")

    def lease(tx: Tx) -> None:
        tx.execute("INSERT INTO leases (namespace, id, created_at) VALUES ('foo', 'l', 0)")
        tx.execute("INSERT INTO lease_resources VALUES ('foo', 'l', 'ingests', 'r')")
        tx.execute(
            "INSERT INTO ingests (namespace, ref, backend_ref, created_at)"
            " VALUES ('foo', 'r', 'foo-1-r', 0)"
        )

    db.update(lease)
    deletions = db.deletions
    await store.delete("foo")
    assert db.deletions == deletions + 1
    counts = db.view(
        lambda tx: [
            tx.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608
            for t in ("namespaces", "leases", "lease_resources", "ingests")
        ]
    )
    assert counts == [0, 0, 0, 0]
