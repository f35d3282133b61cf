"""Conformance tests every content store must pass (cf. containerd's content testsuite).

Use it by subclassing ``ContentStoreSuite`` in a test module and providing a
``store`` fixture::

    class TestLocalStore(ContentStoreSuite):
        @pytest.fixture
        def store(self, tmp_path: Path) -> LocalStore:
            return LocalStore(tmp_path)

The suite needs pytest and pytest-asyncio (``asyncio_mode = "auto"``).
Importing this module must not import grpc.
"""

# ruff: noqa: S101 - a test suite asserts

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.content import Info
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycontainerd.core.content import Provider, Store

MISSING = "sha256:" + "0" * 64


def sha256(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def write_blob(
    store: Store,
    ref: str,
    data: bytes,
    *,
    labels: Mapping[str, str] | None = None,
    chunk: int = 7,
) -> str:
    """Write ``data`` under ``ref`` in small chunks, commit it and return its digest."""
    writer = await store.writer(ref, total=len(data), expected=sha256(data))
    try:
        for i in range(0, len(data), chunk):
            await writer.write(data[i : i + chunk])
        return await writer.commit(len(data), sha256(data), labels=labels)
    finally:
        await writer.close()


async def read_all(store: Provider, dgst: str) -> bytes:
    """All bytes of the blob ``dgst``."""
    reader = await store.reader_at(dgst)
    try:
        return bytes(await reader.read_at(0, reader.size))
    finally:
        await reader.close()


class ContentStoreSuite:
    """Mixin of contract tests; subclasses provide the ``store`` fixture.

    Every test uses a fresh store; refs and contents are unique per test.
    """

    @pytest.fixture
    def store(self) -> Store:
        """The store under test (override)."""
        raise NotImplementedError

    # -- write, commit, read ----------------------------------------------

    async def test_write_commit_read_round_trip(self, store: Store) -> None:
        data = b"hello, content store\n" * 100
        dgst = await write_blob(store, "round-trip", data)
        assert dgst == sha256(data)
        info = await store.info(dgst)
        assert info.digest == dgst
        assert info.size == len(data)
        assert await read_all(store, dgst) == data
        with pytest.raises(NotFoundError):
            await store.status("round-trip")

    async def test_empty_blob(self, store: Store) -> None:
        dgst = await write_blob(store, "empty", b"")
        assert dgst == sha256(b"")
        assert (await store.info(dgst)).size == 0
        assert await read_all(store, dgst) == b""

    async def test_commit_without_expectations_uses_written_digest(self, store: Store) -> None:
        writer = await store.writer("no-expect")
        await writer.write(b"abc")
        assert writer.digest() == sha256(b"abc")
        assert await writer.commit() == sha256(b"abc")
        await writer.close()

    async def test_read_at_offsets(self, store: Store) -> None:
        data = bytes(range(256)) * 4
        dgst = await write_blob(store, "offsets", data)
        reader = await store.reader_at(dgst)
        try:
            assert reader.size == len(data)
            assert await reader.read_at(10, 5) == data[10:15]
            assert await reader.read_at(len(data) - 3, 100) == data[-3:]
            assert await reader.read_at(len(data), 10) == b""
        finally:
            await reader.close()

    async def test_labels_on_commit_and_update(self, store: Store) -> None:
        dgst = await write_blob(store, "labels", b"labelled", labels={"a": "1", "b": "2"})
        info = await store.info(dgst)
        assert dict(info.labels) == {"a": "1", "b": "2"}
        new = Info(
            digest=dgst,
            size=info.size,
            created_at=info.created_at,
            updated_at=info.updated_at,
            labels={"a": "x", "c": "3"},
        )
        updated = await store.update(new, "labels.a", "labels.b")
        assert dict(updated.labels) == {"a": "x"}
        assert dict((await store.info(dgst)).labels) == {"a": "x"}
        replaced = await store.update(new, "labels")
        assert dict(replaced.labels) == {"a": "x", "c": "3"}

    async def test_update_immutable_field_is_invalid(self, store: Store) -> None:
        dgst = await write_blob(store, "immutable", b"fixed")
        info = await store.info(dgst)
        with pytest.raises(InvalidArgumentError, match='cannot update "size" field'):
            await store.update(info, "size")

    async def test_update_missing_is_not_found(self, store: Store) -> None:
        dgst = await write_blob(store, "gone", b"soon gone")
        info = await store.info(dgst)
        await store.delete(dgst)
        with pytest.raises(NotFoundError):
            await store.update(info, "labels")

    # -- lookups and validation -------------------------------------------

    async def test_info_missing_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError, match=f"content digest {MISSING}"):
            await store.info(MISSING)

    @pytest.mark.parametrize("bad", ["sha256:zz", "", "md5:abc", "sha256:" + "A" * 64])
    async def test_invalid_digest_is_invalid_argument(self, store: Store, bad: str) -> None:
        with pytest.raises(InvalidArgumentError, match="invalid digest"):
            await store.info(bad)

    async def test_reader_of_missing_blob_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFoundError):
            await store.reader_at(MISSING)

    async def test_delete(self, store: Store) -> None:
        dgst = await write_blob(store, "delete-me", b"delete me")
        await store.delete(dgst)
        with pytest.raises(NotFoundError):
            await store.info(dgst)
        with pytest.raises(NotFoundError):
            await store.delete(dgst)

    # -- validation on commit ---------------------------------------------

    async def test_digest_mismatch_is_failed_precondition(self, store: Store) -> None:
        writer = await store.writer("bad-digest")
        await writer.write(b"abc")
        with pytest.raises(
            FailedPreconditionError,
            match=f"unexpected commit digest {sha256(b'abc')}, expected {MISSING}",
        ):
            await writer.commit(3, MISSING)
        await writer.close()
        with pytest.raises(NotFoundError):
            await store.info(sha256(b"abc"))

    async def test_size_mismatch_is_failed_precondition(self, store: Store) -> None:
        writer = await store.writer("bad-size")
        await writer.write(b"abcd")
        with pytest.raises(FailedPreconditionError, match="failed size validation: 4 != 3"):
            await writer.commit(3, "")
        await writer.close()
        with pytest.raises(NotFoundError):
            await store.info(sha256(b"abcd"))

    async def test_expected_digest_already_present(self, store: Store) -> None:
        dgst = await write_blob(store, "first", b"same bytes")
        with pytest.raises(AlreadyExistsError, match=f"content {dgst}"):
            await store.writer("second", expected=dgst)

    async def test_concurrent_commit_of_same_digest(self, store: Store) -> None:
        one = await store.writer("twin-1")
        two = await store.writer("twin-2")
        await one.write(b"twins")
        await two.write(b"twins")
        await one.commit(5, sha256(b"twins"))
        with pytest.raises(AlreadyExistsError):
            await two.commit(5, sha256(b"twins"))
        await one.close()
        await two.close()
        assert await read_all(store, sha256(b"twins")) == b"twins"

    async def test_commit_twice_fails(self, store: Store) -> None:
        writer = await store.writer("commit-twice")
        await writer.write(b"once")
        await writer.commit()
        with pytest.raises(FailedPreconditionError):
            await writer.commit()
        await writer.close()

    # -- ingests: status, resume, abort, locks ------------------------------

    async def test_status_and_resume(self, store: Store) -> None:
        data = b"0123456789" * 50
        writer = await store.writer("resume", total=len(data))
        await writer.write(data[:123])
        await writer.close()

        status = await store.status("resume")
        assert status.ref == "resume"
        assert status.offset == 123
        assert status.total == len(data)
        assert status.started_at <= status.updated_at

        writer = await store.writer("resume", total=len(data))
        assert (await writer.status()).offset == 123
        assert writer.digest() == sha256(data[:123])
        await writer.write(data[123:])
        dgst = await writer.commit(len(data), sha256(data))
        await writer.close()
        assert await read_all(store, dgst) == data

    async def test_resume_with_different_total_fails(self, store: Store) -> None:
        writer = await store.writer("total", total=10)
        await writer.write(b"abc")
        await writer.close()
        with pytest.raises(FailedPreconditionError, match="provided total differs from status"):
            await store.writer("total", total=11)
        # the failed open released the lock
        writer = await store.writer("total", total=10)
        await writer.close()

    async def test_truncate_restarts_the_ingest(self, store: Store) -> None:
        writer = await store.writer("truncate")
        await writer.write(b"wrong data")
        await writer.truncate(0)
        assert (await writer.status()).offset == 0
        assert writer.digest() == sha256(b"")
        await writer.write(b"right")
        assert await writer.commit(5, sha256(b"right")) == sha256(b"right")
        await writer.close()
        assert await read_all(store, sha256(b"right")) == b"right"

    async def test_second_writer_on_locked_ref_is_unavailable(self, store: Store) -> None:
        writer = await store.writer("locked-ref")
        with pytest.raises(UnavailableError, match=r"ref \S*locked-ref locked for .* \(since "):
            await store.writer("locked-ref")
        await writer.close()
        again = await store.writer("locked-ref")
        await again.close()

    async def test_lock_released_after_commit(self, store: Store) -> None:
        writer = await store.writer("commit-unlocks")
        await writer.write(b"x")
        await writer.commit()
        fresh = await store.writer("commit-unlocks")
        assert (await fresh.status()).offset == 0
        await fresh.close()

    async def test_different_refs_write_concurrently(self, store: Store) -> None:
        async def one(i: int) -> str:
            return await write_blob(store, f"parallel-{i}", f"blob {i}".encode() * 1000)

        digests = await asyncio.gather(*(one(i) for i in range(8)))
        assert len(set(digests)) == 8

    async def test_abort(self, store: Store) -> None:
        writer = await store.writer("abort-me")
        await writer.write(b"partial")
        await writer.close()
        await store.abort("abort-me")
        with pytest.raises(NotFoundError):
            await store.status("abort-me")
        with pytest.raises(NotFoundError, match="reference abort-me"):
            await store.abort("abort-me")

    async def test_status_of_unknown_ref(self, store: Store) -> None:
        with pytest.raises(NotFoundError, match="reference nope"):
            await store.status("nope")

    async def test_list_statuses_with_filters(self, store: Store) -> None:
        for ref in ("r1", "r2", "other"):
            writer = await store.writer(ref)
            await writer.write(ref.encode())
            await writer.close()
        refs = sorted(s.ref for s in await store.list_statuses())
        assert refs == ["other", "r1", "r2"]
        refs = sorted(s.ref for s in await store.list_statuses("ref~=r[0-9]"))
        assert refs == ["r1", "r2"]
        refs = sorted(s.ref for s in await store.list_statuses("ref==r1", "ref==other"))
        assert refs == ["other", "r1"]
        with pytest.raises(InvalidArgumentError):
            await store.list_statuses("ref=r1")

    # -- walk ----------------------------------------------------------------

    async def test_walk_with_filters(self, store: Store) -> None:
        one = await write_blob(store, "w1", b"one", labels={"kind": "a"})
        two = await write_blob(store, "w2", b"two", labels={"kind": "b", "x": "y"})
        three = await write_blob(store, "w3", b"three")

        async def walk(*filters: str) -> set[str]:
            return {info.digest async for info in store.walk(*filters)}

        assert await walk() == {one, two, three}
        assert await walk(f"digest=={two}") == {two}
        assert await walk("labels.kind==a") == {one}
        assert await walk("labels.kind") == {one, two}
        assert await walk("labels.kind==b,labels.x==y") == {two}
        assert await walk("labels.kind==a", "labels.x") == {one, two}
        assert await walk("labels.kind!=a") == {two, three}
        assert await walk("size==5") == {three}
        with pytest.raises(InvalidArgumentError):
            await walk("labels.kind=a")
