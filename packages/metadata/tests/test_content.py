"""The namespaced content view over the local store."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.core.content import Info
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from pycontainerd.core.leases import Resource
from pycontainerd.core.namespaces import with_lease, with_namespace
from pycontainerd.metadata.content import ISOLATED, MetadataContentStore
from pycontainerd.metadata.leases import LeaseStore
from pycontainerd.metadata.namespaces import NamespaceStore

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.metadata.db import MetadataDB

DATA = b"hello content"
DGST = "sha256:" + hashlib.sha256(DATA).hexdigest()
OTHER = "sha256:" + "0" * 64


pytestmark = pytest.mark.usefixtures("default_namespace")


async def write(cs: MetadataContentStore, ref: str, data: bytes = DATA, **kw: object) -> str:
    w = await cs.writer(ref, total=len(data), expected=str(kw.pop("expected", "")))
    await w.write(data)
    return await w.commit(len(data), "", labels=kw.get("labels"))  # type: ignore[arg-type]


async def digests_of(cs: MetadataContentStore, *fs: str) -> list[str]:
    return [i.digest async for i in cs.walk(*fs)]


async def test_blob_visible_only_where_written(cs: MetadataContentStore) -> None:
    assert await write(cs, "r1", labels={"a": "b"}) == DGST
    info = await cs.info(DGST)
    assert (info.size, dict(info.labels)) == (len(DATA), {"a": "b"})
    reader = await cs.reader_at(DGST)
    try:
        assert await reader.read_at(0, 100) == DATA
    finally:
        await reader.close()
    with with_namespace("other"):
        with pytest.raises(NotFoundError, match=f"^content digest {DGST}: not found$"):
            await cs.info(DGST)
        with pytest.raises(NotFoundError):
            await cs.reader_at(DGST)
        assert await digests_of(cs) == []
    assert await digests_of(cs) == [DGST]
    assert await digests_of(cs, "labels.a==b") == [DGST]
    assert await digests_of(cs, "labels.a==c") == []


async def test_shared_policy_does_not_write_again(
    cs: MetadataContentStore, backend: LocalStore, db: MetadataDB
) -> None:
    await write(cs, "r1")
    blob = backend.blob_path(DGST)
    inode = blob.stat().st_ino
    with with_namespace("foo"):
        await LeaseStore(db).create("l1")
        with with_lease("l1"), pytest.raises(AlreadyExistsError, match=f"content {DGST}"):
            await cs.writer("r2", total=len(DATA), expected=DGST)
        assert (await cs.info(DGST)).size == len(DATA)
        assert await LeaseStore(db).list_resources("l1") == [Resource(id=DGST, type="content")]
        assert await cs.list_statuses() == []  # no ingest was opened
    assert blob.stat().st_ino == inode
    # Both namespaces now hold the blob: namespace foo cannot be deleted.
    with pytest.raises(Exception, match=r"still has blobs"):
        await NamespaceStore(db).delete("foo")


async def test_shared_policy_ignores_a_wrong_size(cs: MetadataContentStore) -> None:
    await write(cs, "r1")
    with with_namespace("foo"):
        w = await cs.writer("r2", total=len(DATA) + 1, expected=DGST)
        await w.close()
        assert [s.ref for s in await cs.list_statuses()] == ["r2"]


async def test_isolated_policy_writes_per_namespace(db: MetadataDB, backend: LocalStore) -> None:
    cs = MetadataContentStore(db, backend, policy=ISOLATED)
    await write(cs, "r1")
    with with_namespace("foo"):
        # The backend already has the bytes, but the namespace must prove it has them.
        assert await write(cs, "r1", expected=DGST) == DGST
        assert (await cs.info(DGST)).size == len(DATA)
        with pytest.raises(AlreadyExistsError):
            await cs.writer("r3", expected=DGST)


async def test_commit_twice_in_namespace_is_already_exists(cs: MetadataContentStore) -> None:
    await write(cs, "r1")
    with pytest.raises(AlreadyExistsError):
        await write(cs, "r2")
    assert await cs.list_statuses() == []


async def test_ingests_are_namespaced_and_resumable(cs: MetadataContentStore) -> None:
    w = await cs.writer("same-ref", total=len(DATA))
    await w.write(DATA[:5])
    await w.close()
    with with_namespace("foo"):
        assert await cs.list_statuses() == []
        with pytest.raises(NotFoundError, match=r"^reference same-ref: not found$"):
            await cs.status("same-ref")
        w2 = await cs.writer("same-ref")  # same name, different ingest
        assert (await w2.status()).offset == 0
        await w2.close()
    st = await cs.status("same-ref")
    assert (st.ref, st.offset, st.total) == ("same-ref", 5, len(DATA))
    w = await cs.writer("same-ref")
    assert (await w.status()).offset == 5
    await w.write(DATA[5:])
    assert await w.commit(len(DATA), DGST) == DGST
    assert [s.ref for s in await cs.list_statuses()] == []
    with with_namespace("foo"):
        assert [s.ref for s in await cs.list_statuses("ref==same-ref")] == ["same-ref"]
        await cs.abort("same-ref")
        assert await cs.list_statuses() == []
        with pytest.raises(NotFoundError):
            await cs.abort("same-ref")


async def test_lease_holds_ingest_then_content(cs: MetadataContentStore, db: MetadataDB) -> None:
    leases = LeaseStore(db)
    await leases.create("l1")
    with with_lease("l1"):
        w = await cs.writer("r1", total=len(DATA))
        assert await leases.list_resources("l1") == [Resource(id="r1", type="ingests")]
        await w.write(DATA)
        await w.commit(len(DATA), DGST)
    assert await leases.list_resources("l1") == [Resource(id=DGST, type="content")]
    expire = db.view(lambda tx: tx.execute("SELECT COUNT(*) FROM ingests").fetchone()[0])
    assert expire == 0
    with with_lease("ghost"), pytest.raises(NotFoundError, match=r"lease does not exist"):
        await cs.writer("r9")


async def test_info_leased_holds_what_the_namespace_has(
    cs: MetadataContentStore, db: MetadataDB
) -> None:
    await write(cs, "r1")
    assert (await cs.info_leased(DGST)).size == len(DATA)  # no lease: only info
    leases = LeaseStore(db)
    await leases.create("l1")
    with with_lease("l1"):
        info = await cs.info_leased(DGST)
        with pytest.raises(NotFoundError, match=f"^content digest {OTHER}: not found$"):
            await cs.info_leased(OTHER)
    assert info == await cs.info(DGST)
    assert await leases.list_resources("l1") == [Resource(id=DGST, type="content")]
    with with_namespace("other"), with_lease("l1"), pytest.raises(NotFoundError):
        await cs.info_leased(DGST)  # another namespace's blob is not lent


async def test_unleased_ingest_expires_in_a_day(cs: MetadataContentStore, db: MetadataDB) -> None:
    w = await cs.writer("r1")
    await w.close()
    created, expire = db.view(
        lambda tx: tx.execute("SELECT created_at, expire_at FROM ingests").fetchone()
    )
    assert expire - created == pytest.approx(24 * 3600 * 10**9, abs=10**9)


async def test_update_labels_and_delete(cs: MetadataContentStore, db: MetadataDB) -> None:
    await write(cs, "r1", labels={"a": "1", "containerd.io/gc.ref.content": DGST})
    info = await cs.info(DGST)
    new = Info(
        digest=DGST,
        size=0,
        created_at=info.created_at,
        updated_at=info.updated_at,
        labels={"b": "2"},
    )
    got = await cs.update(new, "labels.b", "labels.containerd.io/gc.ref.content")
    assert dict(got.labels) == {"a": "1", "b": "2"}
    assert db.dirty  # a GC reference label went away
    assert dict((await cs.info(DGST)).labels) == {"a": "1", "b": "2"}
    with pytest.raises(InvalidArgumentError, match=r'cannot update "size" field'):
        await cs.update(new, "size")
    with pytest.raises(InvalidArgumentError, match=r"content.Labels: label key and value"):
        await cs.update(
            Info(
                digest=DGST,
                size=0,
                created_at=info.created_at,
                updated_at=info.updated_at,
                labels={"x": "y" * 5000},
            )
        )
    await cs.delete(DGST)
    with pytest.raises(NotFoundError):
        await cs.delete(DGST)
    with pytest.raises(NotFoundError):
        await cs.info(DGST)


async def test_bad_input(cs: MetadataContentStore) -> None:
    with pytest.raises(InvalidArgumentError, match=r"ref must not be empty"):
        await cs.writer("")
    with pytest.raises(InvalidArgumentError, match=r"invalid digest"):
        await cs.writer("r", expected="sha256:nothex")
    with pytest.raises(InvalidArgumentError, match=r"parse error"):
        await digests_of(cs, "digest=")


async def test_second_writer_of_a_ref_being_committed_sees_the_result(
    db: MetadataDB, tmp_path: Path
) -> None:
    """As containerd (open and commit in one bolt tx): a second writer sees before or after."""
    cs = MetadataContentStore(db, LocalStore(tmp_path / "content", lock_retries=14))
    data = b"committed once" * 10_000
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    first = await cs.writer("same", total=len(data))
    await first.write(data)
    # While the first writer holds the ingest, the ref is locked (the backend ref in the text).
    with pytest.raises(UnavailableError, match=r"^ref default/\d+/same locked for "):
        await cs.writer("same", total=len(data))
    commit = asyncio.create_task(first.commit(len(data), dgst))
    await asyncio.sleep(0)  # the commit takes the ref before the next open asks for it
    with pytest.raises(AlreadyExistsError, match=f"content {dgst}"):
        await cs.writer("same", total=len(data), expected=dgst)
    assert await commit == dgst
    # Without an expected digest the ref opens as a new ingest, with its own row.
    again = await cs.writer("same", total=len(data))
    assert (await again.status()).offset == 0
    assert [s.ref for s in await cs.list_statuses()] == ["same"]
    await again.close()


async def test_racing_writers_of_one_ref_get_only_upstream_answers(
    cs: MetadataContentStore,
) -> None:
    outcomes: list[str] = []

    async def one(ref: str, data: bytes, expected: str) -> None:
        try:
            writer = await cs.writer(ref, total=len(data), expected=expected)
            if (await writer.status()).offset:
                await writer.truncate(0)
            await writer.write(data)
            await writer.commit(len(data), "")
        except (UnavailableError, AlreadyExistsError) as exc:
            outcomes.append(type(exc).__name__)
        else:
            outcomes.append("committed")

    for i in range(40):
        data = f"blob {i} ".encode() * 4096
        expected = "sha256:" + hashlib.sha256(data).hexdigest() if i % 2 else ""
        await asyncio.gather(one(f"r{i}", data, expected), one(f"r{i}", data, expected))
        assert (await cs.info("sha256:" + hashlib.sha256(data).hexdigest())).size == len(data)
    assert outcomes.count("committed") == 40
    assert await cs.list_statuses() == []
    assert await cs.backend.list_statuses() == []
