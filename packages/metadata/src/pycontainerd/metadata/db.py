"""The metadata database: one SQLite file, explicit transactions, forward migrations.

``MetadataDB`` owns ``<root>/io.containerd.metadata.v1.sqlite/meta.db``. It is
the only module that opens SQLite connections; the stores (namespaces, images,
containers, leases, content and snapshot views) describe their work as
functions of a ``Tx`` and hand them to :meth:`MetadataDB.update` (write) or
:meth:`MetadataDB.view` (read).

Concurrency model, kept deliberately small:

* Every thread that touches the database gets its own connection
  (``threading.local``); SQLite connections are never shared between threads.
* The file runs in WAL mode, so readers never block the writer or each other.
* Writes are serialised in-process by a lock and across processes by
  ``BEGIN IMMEDIATE`` plus a busy timeout. A write function that raises rolls
  the whole transaction back: the database is left exactly as it was.
* asyncio callers use :meth:`aview` / :meth:`aupdate`, which run the same
  functions on a small reader pool and a single writer thread, so the event
  loop never blocks on disk.
* A write that returned is on disk: ``synchronous = FULL`` makes every commit
  fsync the WAL, as bolt fsyncs every transaction (containerd's promise). A
  crash, kill -9 or power loss after ``update`` returned loses nothing.
  ``durable=False`` (``synchronous = NORMAL``: a power loss may drop the last
  commits, a process crash never does) is for tests and tools only.

Garbage collection hooks: a write that removes a reference calls
``tx.mark_dirty()``. After each committed write the database bumps its
``mutations`` counter (and ``deletions`` when dirty) and calls every
registered mutation callback with the dirty flag, the way containerd's bolt
database reports mutations to its GC scheduler. Code that creates an object in
a backend and then its row holds :attr:`MetadataDB.gc_lock` shared across both
steps, so the collector's backend cleanup (exclusive) never deletes an object
whose row is on its way. Collection itself lives in ``gc.py``.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pycontainerd.core.closing import finish_shielded
from pycontainerd.core.errdefs import FailedPreconditionError, InternalError
from pycontainerd.metadata.schema import MIGRATIONS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
    from pathlib import Path

    from pycontainerd.metadata.migration import Migration

T = TypeVar("T")


class SharedExclusiveLock:
    """An asyncio readers-writer lock; a waiting exclusive holder blocks new shared ones.

    Shared: writers that put an object into a backend and then record it.
    Exclusive: the garbage collector's backend cleanup.
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0

    @contextlib.asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        """Hold the lock together with other shared holders."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._exclusive and not self._waiting)
            self._shared += 1
        try:
            yield
        finally:
            async with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold the lock alone."""
        async with self._cond:
            self._waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._exclusive and not self._shared)
            finally:
                self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            async with self._cond:
                self._exclusive = False
                self._cond.notify_all()


#: File name of the database inside the plugin's root directory.
DB_FILENAME: Final = "meta.db"

#: How long a writer waits for another process's write lock, in milliseconds.
BUSY_TIMEOUT_MS: Final = 10_000


def now_ns() -> int:
    """Current UTC time in nanoseconds since the epoch (how timestamps are stored)."""
    return time.time_ns()


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open (a failed COMMIT may have ended it)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


class Tx:
    """A transaction in progress, handed to the functions given to ``view``/``update``.

    Attributes:
        conn: the connection, inside ``BEGIN``/``BEGIN IMMEDIATE``.
        writable: whether this is a write transaction.
    """

    __slots__ = ("_after_commit", "conn", "dirty", "writable")

    def __init__(self, conn: sqlite3.Connection, *, writable: bool) -> None:
        self.conn = conn
        self.writable = writable
        self.dirty = False
        self._after_commit: list[Callable[[], None]] = []

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """Run one statement in this transaction."""
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> sqlite3.Cursor:
        """Run one statement for each row of parameters."""
        return self.conn.executemany(sql, rows)

    def mark_dirty(self) -> None:
        """Record that this write removed a reference (the GC should run)."""
        self.dirty = True

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction committed (never on rollback)."""
        self._after_commit.append(callback)

    def run_after_commit(self) -> None:
        """Run the callbacks registered with :meth:`after_commit`."""
        for callback in self._after_commit:
            callback()


def latest_version(migrations: Sequence[Migration]) -> int:
    """The version the given migrations lead to (0 for none)."""
    return migrations[-1].version if migrations else 0


def _check_migrations(migrations: Sequence[Migration]) -> None:
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            msg = f"migrations must be numbered 1..n; got {migration.version} at {expected}"
            raise ValueError(msg)


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database (0 for a fresh file)."""
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()
    return int(version)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> int:
    """Bring the schema of ``conn`` up to the last of ``migrations``.

    Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with the
    row that records it, so a crash between steps leaves a database at a
    consistent earlier version that the next open continues from.

    Returns:
        The schema version after migrating.

    Raises:
        FailedPreconditionError: the database is newer than ``migrations``
            (written by a later release; we never migrate backwards).
    """
    _check_migrations(migrations)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY,"
            " description TEXT NOT NULL,"
            " applied_at INTEGER NOT NULL)"
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    current = schema_version(conn)
    target = latest_version(migrations)
    if current > target:
        msg = (
            f"metadata database schema version {current} is newer than the "
            f"supported version {target}"
        )
        raise FailedPreconditionError(msg)
    for migration in migrations[current:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            if schema_version(conn) >= migration.version:
                conn.execute("ROLLBACK")
                continue
            for statement in migration.statements:
                conn.execute(statement)
            if migration.apply is not None:
                migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.description, now_ns()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(conn)


class MetadataDB:
    """The metadata database file and its connections.

    Use :meth:`open` (or the constructor followed by :meth:`init`). The stores
    in this package take a ``MetadataDB`` and express every operation as a
    function of :class:`Tx`.

    Args:
        path: the database file.
        migrations: schema steps; defaults to this package's schema.
        readers: size of the asyncio reader pool.
        durable: fsync every commit (``synchronous = FULL``); see the module
            docstring.
    """

    def __init__(
        self,
        path: Path,
        *,
        migrations: Sequence[Migration] | None = None,
        readers: int = 4,
        durable: bool = True,
    ) -> None:
        if migrations is None:
            migrations = MIGRATIONS
        self.path = path
        self.durable = durable
        self._migrations = tuple(migrations)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="metadata-read")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metadata-write")
        self._callbacks: list[Callable[[bool], None]] = []
        self._gc_waiter: Callable[[], Awaitable[None]] | None = None
        self._closed = False
        self.gc_lock = SharedExclusiveLock()
        self.mutations = 0
        self.deletions = 0

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        migrations: Sequence[Migration] | None = None,
        readers: int = 4,
        durable: bool = True,
    ) -> MetadataDB:
        """Create the directory if needed, open the file and migrate it."""
        db = cls(path, migrations=migrations, readers=readers, durable=durable)
        db.init()
        return db

    def init(self) -> None:
        """Create parent directories, switch the file to WAL and migrate the schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
        conn = self._connection()
        conn.execute("PRAGMA journal_mode = WAL")
        migrate(conn, self._migrations)

    @property
    def version(self) -> int:
        """The schema version of the open database."""
        return self.view(lambda tx: schema_version(tx.conn))

    # -- connections ---------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._closed:
            msg = "metadata database is closed"
            raise FailedPreconditionError(msg)
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # closed from another thread at shutdown
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute(f"PRAGMA synchronous = {'FULL' if self.durable else 'NORMAL'}")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    # -- transactions --------------------------------------------------------

    def view(self, fn: Callable[[Tx], T]) -> T:
        """Run ``fn`` in a read transaction (a consistent snapshot) and return its result."""
        conn = self._connection()
        if conn.in_transaction:
            msg = "nested metadata transaction"
            raise InternalError(msg)
        conn.execute("BEGIN")
        try:
            return fn(Tx(conn, writable=False))
        finally:
            conn.execute("ROLLBACK")

    def update(self, fn: Callable[[Tx], T], *, notify: bool = True) -> T:
        """Run ``fn`` in a write transaction; commit if it returns, roll back if it raises.

        Mutation callbacks run after the commit, outside the write lock. With
        ``notify=False`` (the collector's own transaction) the write is neither
        counted nor reported.
        """
        conn = self._connection()
        if conn.in_transaction:
            msg = "nested metadata transaction"
            raise InternalError(msg)
        with self._write_lock:
            result, tx = self._write(conn, fn, notify=notify)
        return self._committed(result, tx, notify=notify)

    def _write(
        self, conn: sqlite3.Connection, fn: Callable[[Tx], T], *, notify: bool
    ) -> tuple[T, Tx]:
        """The transaction itself; the caller holds the write lock."""
        conn.execute("BEGIN IMMEDIATE")
        tx = Tx(conn, writable=True)
        try:
            result = fn(tx)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        if notify:
            self.mutations += 1
            if tx.dirty:
                self.deletions += 1
        return result, tx

    def _committed(self, result: T, tx: Tx, *, notify: bool) -> T:
        tx.run_after_commit()
        if notify:
            for callback in list(self._callbacks):
                callback(tx.dirty)
        return result

    async def aview(self, fn: Callable[[Tx], T]) -> T:
        """:meth:`view` on the reader pool, for asyncio callers."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.view, fn)

    async def aview_point(self, fn: Callable[[Tx], T]) -> T:
        """:meth:`view` on the calling thread (the event loop), for point reads.

        A lookup by primary key touches a handful of cached pages and, in WAL
        mode, never waits for the writer: it costs tens of microseconds, less
        than the trip to the reader pool and back, which hot unary RPCs
        (``Content.Info``, ``Read``, ``Get``) pay on every call. Scans and
        anything that may read many pages go through :meth:`aview`.
        """
        return self.view(fn)

    def point_row(self, sql: str, params: Sequence[object]) -> tuple[Any, ...] | None:
        """The first row of one ``SELECT``, on the calling thread, without BEGIN/ROLLBACK.

        SQLite runs a lone statement in its own read transaction, so a single
        query is as consistent as in :meth:`view`, two statements fewer. For
        lookups by key on hot paths (``Content.Read`` checks the blob on every
        32 KiB call); anything that runs several statements uses :meth:`view`.
        """
        conn = self._connection()
        row: tuple[Any, ...] | None = conn.execute(sql, params).fetchone()
        return row

    async def aupdate_point(self, fn: Callable[[Tx], T]) -> T:
        """:meth:`update` of a few rows; on the calling thread only when it cannot block.

        A durable database fsyncs every commit, which must not stall the event
        loop: the write goes to the writer thread as :meth:`aupdate` does.
        Without the fsync (``durable=False``) a record's create, update or
        delete takes tens of microseconds, less than the trip to the writer
        thread and back, and runs here when no other write holds the lock.
        """
        if self.durable or not self._write_lock.acquire(blocking=False):
            return await self.aupdate(fn)
        try:
            conn = self._connection()
            if conn.in_transaction:
                msg = "nested metadata transaction"
                raise InternalError(msg)
            result, tx = self._write(conn, fn, notify=True)
        finally:
            self._write_lock.release()
        return self._committed(result, tx, notify=True)

    async def aupdate(self, fn: Callable[[Tx], T], *, notify: bool = True) -> T:
        """:meth:`update` on the writer thread, for asyncio callers."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._writer, functools.partial(self.update, fn, notify=notify)
        )

    async def on_writer(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the writer thread: :meth:`update` calls and other blocking steps in one trip.

        The steps run one after another with no other write in between, and
        to the end even if the caller is cancelled (a cancelled caller gets
        ``CancelledError`` once they have ended, and what they did stays done).
        """
        loop = asyncio.get_running_loop()
        return await finish_shielded(loop.run_in_executor(self._writer, fn))

    # -- GC hooks ------------------------------------------------------------

    def add_mutation_callback(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(dirty)`` after every committed write.

        ``dirty`` is true when the write removed a reference. Used by the GC
        scheduler; callbacks must be quick and must not raise.
        """
        self._callbacks.append(callback)

    def set_gc_waiter(self, waiter: Callable[[], Awaitable[None]] | None) -> None:
        """Install what :meth:`wait_for_gc` awaits (the GC scheduler's "collect now and wait")."""
        self._gc_waiter = waiter

    async def wait_for_gc(self) -> None:
        """Run a garbage collection and wait for it (``images rm --sync``, ``leases rm --sync``).

        Until a GC scheduler installs itself with :meth:`set_gc_waiter`, this
        returns at once: deletions are recorded (``dirty``), nothing is collected.
        """
        if self._gc_waiter is not None:
            await self._gc_waiter()

    @property
    def dirty(self) -> bool:
        """Whether a deletion happened since the last :meth:`reset_dirty`."""
        return self.deletions > 0

    def reset_dirty(self) -> None:
        """Forget counted mutations and deletions (called by the GC after a run)."""
        self.mutations = 0
        self.deletions = 0

    # -- lifecycle -----------------------------------------------------------

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``ok`` when healthy)."""
        return self.view(lambda tx: str(tx.execute("PRAGMA integrity_check").fetchone()[0]))

    def close(self) -> None:
        """Close every connection and stop the worker threads."""
        if self._closed:
            return
        self._closed = True
        self._readers.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    async def aclose(self) -> None:
        """Close from asyncio (the daemon's shutdown path)."""
        await asyncio.to_thread(self.close)
