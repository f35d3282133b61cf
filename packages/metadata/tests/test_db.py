"""The database engine: WAL, foreign keys, transactions, migrations, mutation hooks."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import FailedPreconditionError, InternalError
from pycontainerd.metadata.db import MetadataDB, Tx, migrate, schema_version
from pycontainerd.metadata.migration import Migration
from pycontainerd.metadata.schema import MIGRATIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


def _add_ns(tx: Tx, name: str) -> None:
    tx.execute(
        "INSERT INTO namespaces (name, created_at, updated_at) VALUES (?, 0, 0)",
        (name,),
    )


def _names(tx: Tx) -> list[str]:
    return [r[0] for r in tx.execute("SELECT name FROM namespaces ORDER BY name")]


def test_open_creates_file_in_wal_mode_with_schema(db: MetadataDB) -> None:
    assert db.path.is_file()
    assert db.version == len(MIGRATIONS)
    assert db.view(lambda tx: tx.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    assert db.view(lambda tx: tx.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
    assert db.integrity_check() == "ok"


def test_failed_write_rolls_back_everything(db: MetadataDB) -> None:
    db.update(lambda tx: _add_ns(tx, "keep"))

    def half_then_fail(tx: Tx) -> None:
        _add_ns(tx, "half")
        tx.execute("UPDATE namespaces SET labels = '{\"a\":\"b\"}' WHERE name = 'keep'")
        msg = "boom"
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="boom"):
        db.update(half_then_fail)
    assert db.view(_names) == ["keep"]
    assert db.view(lambda tx: tx.execute("SELECT labels FROM namespaces").fetchone()[0]) == "{}"
    # The connection is usable again after the rollback.
    db.update(lambda tx: _add_ns(tx, "after"))
    assert db.view(_names) == ["after", "keep"]


def test_foreign_keys_are_enforced(db: MetadataDB) -> None:
    def orphan(tx: Tx) -> None:
        tx.execute(
            "INSERT INTO leases (namespace, id, created_at) VALUES ('nope', 'l1', 0)",
        )

    with pytest.raises(sqlite3.IntegrityError):
        db.update(orphan)
    assert db.view(lambda tx: tx.execute("SELECT COUNT(*) FROM leases").fetchone()[0]) == 0


def test_nested_transaction_is_refused(db: MetadataDB) -> None:
    with pytest.raises(InternalError, match="nested"):
        db.update(lambda tx: db.update(lambda tx2: None))
    with pytest.raises(InternalError, match="nested"):
        db.view(lambda tx: db.view(lambda tx2: None))


def test_mutation_callbacks_report_dirty_only_after_commit(db: MetadataDB) -> None:
    seen: list[bool] = []
    db.add_mutation_callback(seen.append)
    db.update(lambda tx: _add_ns(tx, "a"))

    def delete(tx: Tx) -> None:
        tx.execute("DELETE FROM namespaces WHERE name = 'a'")
        tx.mark_dirty()

    db.update(delete)

    def fail(tx: Tx) -> None:
        tx.mark_dirty()
        raise ValueError

    with pytest.raises(ValueError):  # noqa: PT011 - any error will do
        db.update(fail)
    assert seen == [False, True]
    assert db.mutations == 2
    assert db.deletions == 1
    assert db.dirty
    db.reset_dirty()
    assert not db.dirty


def test_after_commit_runs_only_on_commit(db: MetadataDB) -> None:
    ran: list[str] = []

    def ok(tx: Tx) -> None:
        tx.after_commit(lambda: ran.append("ok"))

    def bad(tx: Tx) -> None:
        tx.after_commit(lambda: ran.append("bad"))
        raise KeyError

    db.update(ok)
    with pytest.raises(KeyError):
        db.update(bad)
    assert ran == ["ok"]


def test_reader_sees_a_consistent_snapshot(db: MetadataDB) -> None:
    db.update(lambda tx: _add_ns(tx, "a"))
    started = threading.Event()
    release = threading.Event()
    result: list[list[str]] = []

    def slow_reader(tx: Tx) -> None:
        first = _names(tx)
        started.set()
        assert release.wait(10)
        result.append(first)
        result.append(_names(tx))

    t = threading.Thread(target=db.view, args=(slow_reader,))
    t.start()
    assert started.wait(10)
    db.update(lambda tx: _add_ns(tx, "b"))  # WAL: the writer is not blocked by the reader
    release.set()
    t.join(10)
    assert result == [["a"], ["a"]]
    assert db.view(_names) == ["a", "b"]


async def test_concurrent_async_writers_all_land(db: MetadataDB) -> None:
    db.update(lambda tx: tx.execute("INSERT INTO sequences VALUES ('n', 0)"))

    def bump(tx: Tx) -> int:
        (value,) = tx.execute("SELECT value FROM sequences WHERE name = 'n'").fetchone()
        tx.execute("UPDATE sequences SET value = ? WHERE name = 'n'", (value + 1,))
        return int(value) + 1

    results = await asyncio.gather(*(db.aupdate(bump) for _ in range(50)))
    assert sorted(results) == list(range(1, 51))
    assert await db.aview(lambda tx: tx.execute("SELECT value FROM sequences").fetchone()[0]) == 50


def test_concurrent_writers_from_two_connections(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    one = MetadataDB.open(path)
    two = MetadataDB.open(path)  # a second handle: separate locks, shared file
    try:
        one.update(lambda tx: tx.execute("INSERT INTO sequences VALUES ('n', 0)"))

        def bump(tx: Tx) -> None:
            (value,) = tx.execute("SELECT value FROM sequences WHERE name = 'n'").fetchone()
            tx.execute("UPDATE sequences SET value = ? WHERE name = 'n'", (value + 1,))

        def work(d: MetadataDB) -> None:
            for _ in range(100):
                d.update(bump)

        threads = [threading.Thread(target=work, args=(d,)) for d in (one, two, one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert one.view(lambda tx: tx.execute("SELECT value FROM sequences").fetchone()[0]) == 400
    finally:
        one.close()
        two.close()


def test_closed_database_refuses_work(tmp_path: Path) -> None:
    d = MetadataDB.open(tmp_path / "meta.db")
    d.close()
    d.close()  # idempotent
    with pytest.raises(FailedPreconditionError, match="closed"):
        d.view(lambda tx: None)


# -- the migration framework -------------------------------------------------------------


_OPEN: list[sqlite3.Connection] = []


def _bare(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    _OPEN.append(conn)
    return conn


@pytest.fixture(autouse=True)
def _close_bare() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


STEP1 = Migration(version=1, description="t", statements=("CREATE TABLE t (a INTEGER)",))
STEP2 = Migration(
    version=2,
    description="t.b",
    statements=("ALTER TABLE t ADD COLUMN b INTEGER NOT NULL DEFAULT 7",),
    apply=lambda conn: conn.execute("UPDATE t SET b = a * 2"),
)


def test_migrations_run_forward_from_the_recorded_version(tmp_path: Path) -> None:
    conn = _bare(tmp_path / "m.db")
    assert migrate(conn, [STEP1]) == 1
    conn.execute("INSERT INTO t (a) VALUES (21)")
    assert migrate(conn, [STEP1, STEP2]) == 2
    assert conn.execute("SELECT a, b FROM t").fetchall() == [(21, 42)]
    # Re-running is a no-op.
    assert migrate(conn, [STEP1, STEP2]) == 2
    assert [r[0] for r in conn.execute("SELECT version FROM schema_version")] == [1, 2]


def test_failing_migration_leaves_the_previous_version(tmp_path: Path) -> None:
    conn = _bare(tmp_path / "m.db")
    migrate(conn, [STEP1])

    def broken(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO t (a) VALUES (1)")
        msg = "half way"
        raise RuntimeError(msg)

    bad = Migration(version=2, description="bad", statements=("CREATE TABLE u (x)",), apply=broken)
    with pytest.raises(RuntimeError, match="half way"):
        migrate(conn, [STEP1, bad])
    assert schema_version(conn) == 1
    assert conn.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "u" not in tables


def test_newer_database_is_refused(tmp_path: Path) -> None:
    conn = _bare(tmp_path / "m.db")
    migrate(conn, [STEP1, STEP2])
    with pytest.raises(FailedPreconditionError, match="newer than the supported version 1"):
        migrate(conn, [STEP1])


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    conn = _bare(tmp_path / "m.db")
    with pytest.raises(ValueError, match="numbered"):
        migrate(conn, [STEP2])


def test_real_schema_upgrades_from_every_earlier_version(tmp_path: Path) -> None:
    for start in range(len(MIGRATIONS) + 1):
        path = tmp_path / f"v{start}.db"
        migrate(_bare(path), MIGRATIONS[:start])
        d = MetadataDB.open(path)
        try:
            assert d.version == len(MIGRATIONS)
            assert d.integrity_check() == "ok"
        finally:
            d.close()


async def test_point_reads_run_on_the_loop_thread_and_see_committed_writes(
    db: MetadataDB,
) -> None:
    await db.aupdate(
        lambda tx: tx.execute(
            "INSERT INTO namespaces (name, created_at, updated_at) VALUES ('p', 1, 1)"
        )
    )
    seen: list[tuple[str, object]] = []

    def read(tx: Tx) -> object:
        seen.append((threading.current_thread().name, tx.writable))
        return tx.execute("SELECT name FROM namespaces WHERE name = 'p'").fetchone()

    assert await db.aview_point(read) == ("p",)
    assert seen == [(threading.current_thread().name, False)]
    # a write in flight on the writer thread does not block the point read
    started, release = threading.Event(), threading.Event()

    def slow_write(tx: Tx) -> None:
        tx.execute("UPDATE namespaces SET labels = '{\"a\":\"b\"}' WHERE name = 'p'")
        started.set()
        release.wait(5)

    writing = asyncio.ensure_future(db.aupdate(slow_write))
    await asyncio.to_thread(started.wait, 5)
    try:
        labels = await db.aview_point(
            lambda tx: tx.execute("SELECT labels FROM namespaces WHERE name = 'p'").fetchone()
        )
        assert labels == ("{}",)  # the uncommitted write is invisible
    finally:
        release.set()
        await writing


def _synchronous(tx: Tx) -> int:
    return int(tx.execute("PRAGMA synchronous").fetchone()[0])


async def test_durable_commits_fsync_and_stay_off_the_loop(db: MetadataDB) -> None:
    """A write that returned is on disk (FULL: the WAL is fsynced at every commit)."""
    full = 2
    assert db.durable
    seen: list[tuple[int, str]] = []

    def write(tx: Tx) -> None:
        seen.append((_synchronous(tx), threading.current_thread().name))
        _add_ns(tx, f"n{len(seen)}")

    db.update(write)
    await db.aupdate(write)
    # A point write would block the event loop for the fsync: it goes to the writer thread.
    await db.aupdate_point(write)
    assert [s for s, _ in seen] == [full] * 3
    assert seen[2][1] != threading.current_thread().name
    # Readers' connections too (a read after a checkpoint writes nothing, but uniformly set).
    assert db.view(_synchronous) == full
    assert await db.aview(_synchronous) == full


async def test_point_writes_run_on_the_loop_thread_unless_a_write_is_under_way(
    tmp_path: Path,
) -> None:
    db = MetadataDB.open(tmp_path / "meta.db", durable=False)
    try:
        assert db.view(_synchronous) == 1  # NORMAL
        await _point_writes_on_the_loop(db)
    finally:
        db.close()


async def _point_writes_on_the_loop(db: MetadataDB) -> None:
    threads: list[str] = []
    dirty: list[bool] = []
    db.add_mutation_callback(dirty.append)

    def add(name: str) -> Callable[[Tx], None]:
        def run(tx: Tx) -> None:
            threads.append(threading.current_thread().name)
            _add_ns(tx, name)

        return run

    await db.aupdate_point(add("a"))
    assert threads == [threading.current_thread().name]
    assert dirty == [False]  # committed, reported like any write

    # While another write holds the lock, the call queues on the writer thread.
    started, release = threading.Event(), threading.Event()

    def slow(tx: Tx) -> None:
        _add_ns(tx, "slow")
        started.set()
        release.wait(5)

    writing = asyncio.ensure_future(db.aupdate(slow))
    await asyncio.to_thread(started.wait, 5)
    queued = asyncio.ensure_future(db.aupdate_point(add("b")))
    await asyncio.sleep(0)  # the loop is free: the queued write waits off the loop
    assert not queued.done()
    release.set()
    await writing
    await queued
    assert threads[1] != threading.current_thread().name
    assert db.view(_names) == ["a", "b", "slow"]

    # A failing point write rolls back and leaves the lock free.
    def fail(tx: Tx) -> None:
        _add_ns(tx, "never")
        msg = "boom"
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="boom"):
        await db.aupdate_point(fail)
    assert "never" not in db.view(_names)
    await db.aupdate_point(add("c"))
    assert threads[-1] == threading.current_thread().name
