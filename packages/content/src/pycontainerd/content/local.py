"""The local content store: blobs and ingests in containerd's on-disk layout.

Layout under the store root (the plugin's directory,
``<root>/io.containerd.content.v1.content``)::

    blobs/sha256/<hex>                       committed blobs, read-only (0444)
    ingest/<sha256 hex of ref>/ref           the ingest's reference
    ingest/<sha256 hex of ref>/data          bytes written so far
    ingest/<sha256 hex of ref>/startedat     RFC 3339 (nanoseconds), tmp file + rename
    ingest/<sha256 hex of ref>/updatedat     RFC 3339 (nanoseconds), tmp file + rename
    ingest/<sha256 hex of ref>/total         decimal, only when the total is known

A blob is never visible half-written: a commit fsyncs ``data``, makes it
read-only, hard-links it to its final name (which fails atomically if another
writer committed the same digest first), fsyncs the ``blobs/sha256``
directory and only then removes the ingest. A crash at any point leaves
either no blob or a complete one, and the ingest stays resumable: reopening a
ref whose directory exists re-hashes ``data`` to recover offset and digest.

Labels: upstream's plugin store keeps none (the metadata store owns labels).
This store keeps them **in memory** (lost on restart), enough for standalone
use and for the conformance suite; the daemon's service-facing store is the
metadata package's namespaced view, which persists them.

Blocking file I/O runs in worker threads (``asyncio.to_thread``); data moves
in bounded chunks, never a whole blob at a time.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import random
import shutil
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pycontainerd.content._timefmt import (
    format_go_duration,
    format_go_time,
    format_rfc3339,
    parse_rfc3339,
)
from pycontainerd.core import digests
from pycontainerd.core.closing import finish_shielded
from pycontainerd.core.content import Info, Status
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Mapping

__all__ = [
    "CHUNK_SIZE",
    "INGEST_EXPIRY",
    "INLINE_READ_MAX",
    "Info",
    "LocalReaderAt",
    "LocalStore",
    "LocalWriter",
    "Status",
]

#: Chunk size used when re-hashing or copying data (bounded memory).
CHUNK_SIZE: Final = 1 << 20
#: Largest read answered without a worker thread when it cannot block (see ``LocalReaderAt``).
INLINE_READ_MAX: Final = 256 << 10
#: Age after which an unused ingest is considered abandoned (upstream: 24 h).
INGEST_EXPIRY: Final = timedelta(hours=24)


def _now() -> datetime:
    return datetime.now(UTC)


def quote(s: str) -> str:
    """Quote ``s`` with double quotes, the way Go's ``%q`` does for plain text."""
    return json.dumps(s, ensure_ascii=False)


def _ref_dir_name(ref: str) -> str:
    return hashlib.sha256(ref.encode()).hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _read_time(path: Path, fallback: datetime) -> datetime:
    try:
        return parse_rfc3339(path.read_text())
    except (OSError, ValueError):
        return fallback


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LockTable:
    """In-process ingest locks with the time each was taken (for the error text)."""

    def __init__(self) -> None:
        self._mu = threading.Lock()
        self._held: dict[tuple[str, str], tuple[datetime, float]] = {}

    def try_lock(self, root: str, ref: str) -> None:
        with self._mu:
            held = self._held.get((root, ref))
            if held is not None:
                since, mono = held
                elapsed = format_go_duration(time.monotonic() - mono)
                msg = f"ref {ref} locked for {elapsed} (since {format_go_time(since)})"
                raise UnavailableError(msg)
            self._held[(root, ref)] = (_now(), time.monotonic())

    def unlock(self, root: str, ref: str) -> None:
        with self._mu:
            self._held.pop((root, ref), None)

    def held(self, root: str, ref: str) -> bool:
        with self._mu:
            return (root, ref) in self._held


# Process-wide, like upstream's package-level lock map: two LocalStore objects
# over one root must not both write the same ref.
_LOCKS: Final = _LockTable()


def _memory_backed(path: Path) -> bool:
    """Whether ``path`` lives on a memory file system (tmpfs, ramfs).

    Reads there never wait for a disk, so small ones run on the event loop.
    Decided from ``/proc/self/mountinfo`` (longest mount point that contains
    ``path``); anything unknown counts as disk-backed.
    """
    try:
        target = os.path.realpath(path)
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            mounts = fh.read().splitlines()
    except OSError:
        return False
    best, fstype = "", ""
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) < 5 or not right:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, fstype = point, right.split()[0]
    return fstype in {"tmpfs", "ramfs"}


class LocalReaderAt:
    """Random access to one committed blob (containerd's ``ReaderAt``).

    Reads of at most :data:`INLINE_READ_MAX` bytes are answered on the
    calling thread when that cannot wait for a disk: on a memory file system,
    or when ``preadv2(RWF_NOWAIT)`` finds the bytes in the page cache. Clients
    such as Go's ``ctr content get`` read in 32 KiB calls, and a worker-thread
    round trip per call would cost more than the read. Everything else runs in
    a worker thread.
    """

    def __init__(self, fd: int, size: int, *, memory: bool = False) -> None:
        self._fd: int | None = fd
        self.size = size
        self._memory = memory
        self._nowait = hasattr(os, "RWF_NOWAIT")

    def _read_inline(self, fd: int, offset: int, size: int) -> bytes | None:
        """The bytes, if they can be had without waiting for a disk; else ``None``."""
        if self._memory:
            return os.pread(fd, size, offset)
        if not self._nowait:
            return None
        buf = bytearray(size)
        try:
            n = os.preadv(fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return None  # not cached
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                self._nowait = False  # the file system cannot say; use threads
                return None
            raise
        if n < size and offset + n < self.size:
            return None  # partly cached: the rest would wait
        return bytes(buf[:n])

    async def read_at(self, offset: int, size: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` (fewer at the end of the blob).

        Raises:
            InvalidArgumentError: negative offset or size.
            FailedPreconditionError: the reader is closed.
        """
        if offset < 0 or size < 0:
            msg = f"invalid read of {size} bytes at offset {offset}"
            raise InvalidArgumentError(msg)
        fd = self._fd
        if fd is None:
            msg = "reader is closed"
            raise FailedPreconditionError(msg)
        data = self.read_now(offset, size)
        if data is not None:
            return data
        return await asyncio.to_thread(os.pread, fd, size, offset)

    async def chunks(
        self, offset: int = 0, size: int = 0, chunk_size: int = CHUNK_SIZE
    ) -> AsyncIterator[bytes]:
        """Yield the bytes of ``[offset, offset+size)`` (``size <= 0``: to the end) in chunks."""
        end = self.size if size <= 0 else min(self.size, offset + size)
        pos = max(offset, 0)
        while pos < end:
            data = await self.read_at(pos, min(chunk_size, end - pos))
            if not data:
                return
            yield data
            pos += len(data)

    def fileno(self) -> int:
        """The open blob's file descriptor, for blocking ``pread`` from a worker thread.

        Valid until :meth:`close`. The differ reads a layer this way, so the
        whole apply runs on one thread instead of a round trip per chunk.

        Raises:
            FailedPreconditionError: the reader is closed.
        """
        if self._fd is None:
            msg = "reader is closed"
            raise FailedPreconditionError(msg)
        return self._fd

    def read_now(self, offset: int, size: int) -> bytes | None:
        """Up to ``size`` bytes at ``offset`` if they can be had without waiting, else None.

        At most :data:`INLINE_READ_MAX` bytes, from a memory file system or
        the page cache (what :meth:`read_at` answers on the calling thread).
        """
        fd = self._fd
        if fd is None or offset < 0 or not 0 <= size <= INLINE_READ_MAX:
            return None
        return self._read_inline(fd, offset, size)

    async def close(self) -> None:
        """Release the file; further reads fail."""
        self.close_now()

    def close_now(self) -> None:
        """:meth:`close` for synchronous callers."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class LocalWriter:
    """An open, locked ingest. Append-only; ``commit`` or ``close`` releases the lock.

    Obtain one with ``LocalStore.writer``. Not safe for concurrent use by
    several tasks: one writer serves one stream.
    """

    def __init__(
        self,
        store: LocalStore,
        ref: str,
        path: Path,
        fd: int,
        *,
        offset: int,
        hasher: hashlib._Hash,
        total: int,
        expected: str,
        started_at: datetime,
        updated_at: datetime,
    ) -> None:
        self._store = store
        self.ref = ref
        self._path = path
        self._fd: int | None = fd
        self._offset = offset
        self._hasher = hasher
        self._total = total
        self._expected = expected
        self._started_at = started_at
        self._updated_at = updated_at

    @property
    def closed(self) -> bool:
        """Whether the writer was committed or closed."""
        return self._fd is None

    def digest(self) -> str:
        """Digest of the bytes written so far."""
        return "sha256:" + self._hasher.hexdigest()

    async def status(self) -> Status:
        """Current progress (from memory, not disk)."""
        return Status(
            ref=self.ref,
            offset=self._offset,
            total=self._total,
            expected=self._expected,
            started_at=self._started_at,
            updated_at=self._updated_at,
        )

    def _require_open(self) -> int:
        if self._fd is None:
            msg = "cannot write on closed writer"
            raise FailedPreconditionError(msg)
        return self._fd

    def set_total(self, total: int) -> None:
        """Record a newly learnt total (the latest non-zero value wins)."""
        if total > 0:
            self._total = total

    async def write(self, data: bytes) -> int:
        """Append ``data``; returns the number of bytes written (always ``len(data)``)."""
        self._require_open()
        if not data:
            return 0
        await asyncio.to_thread(self._append, data)
        return len(data)

    def thread_sink(self) -> Callable[[bytes | memoryview], None]:
        """``append(data)`` for a worker thread: writes and hashes ``data`` there.

        The writer's other methods must not be called while the thread uses it.
        """
        self._require_open()
        return self._append

    def _append(self, data: bytes | memoryview) -> None:
        fd = self._require_open()
        view = memoryview(data)
        pos = self._offset
        while view:
            n = os.pwrite(fd, view, pos)
            view = view[n:]
            pos += n
        self._hasher.update(data)
        self._offset = pos
        self._updated_at = _now()

    async def truncate(self, size: int) -> None:
        """Discard the data written so far; only ``size == 0`` is supported (as upstream)."""
        fd = self._require_open()
        if size != 0:
            msg = f"truncate to {size}: only truncating to 0 is supported"
            raise InvalidArgumentError(msg)
        await asyncio.to_thread(os.ftruncate, fd, 0)
        self._hasher = hashlib.sha256()
        self._offset = 0
        self._updated_at = _now()
        await asyncio.to_thread(
            _write_atomic, self._path / "updatedat", format_rfc3339(self._updated_at)
        )

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        """Validate size and digest, then publish the blob atomically.

        The writer is released whatever the outcome; a failed validation keeps
        the ingest so that the client can inspect or abort it.

        Args:
            size: expected size, ``0`` when unknown.
            expected: expected digest, ``""`` when unknown.
            labels: labels of the new blob.

        Returns:
            The digest of the committed blob.

        Raises:
            FailedPreconditionError: size or digest mismatch, or closed writer.
            AlreadyExistsError: a blob with this digest exists already (the
                ingest is removed).
        """
        fd = self._fd
        if fd is None:
            msg = "cannot commit on closed writer"
            raise FailedPreconditionError(msg)
        self._fd = None

        def finish() -> str:
            """Sync, validate and publish: one trip to a worker thread."""
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if size > 0 and size != self._offset:
                msg = f"{quote(self.ref)} failed size validation: {self._offset} != {size}"
                raise FailedPreconditionError(msg)
            dgst = self.digest()
            if expected and expected != dgst:
                msg = f"unexpected commit digest {dgst}, expected {expected}"
                raise FailedPreconditionError(msg)
            self._store._publish(self._path, dgst)
            return dgst

        # The ref stays locked until the blob is published and the ingest
        # removed: a second writer of the same ref waits for the lock, then
        # finds either the blob (AlreadyExists) or no ingest, never a
        # half-removed one. So the step runs to its end even if the caller
        # is cancelled.
        try:
            dgst = await finish_shielded(asyncio.to_thread(finish))
            if labels:
                self._store._set_labels(dgst, dict(labels))
        finally:
            self._store._release(self.ref)
        return dgst

    async def close(self) -> None:
        """Release the lock and keep the ingest for a later resume."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            stamp = format_rfc3339(self._updated_at)
            await asyncio.to_thread(_write_atomic, self._path / "updatedat", stamp)
        finally:
            os.close(fd)
            self._store._release(self.ref)


class LocalStore:
    """containerd's local content store, natively async.

    Args:
        root: the store directory (created on demand).
        lock_retries: how many times ``writer`` retries a locked ref, with
            random exponential back-off, before raising ``UnavailableError``.
    """

    def __init__(self, root: Path | str, *, lock_retries: int = 6) -> None:
        self.root = Path(root)
        self._blobs_dir = str(self.root / "blobs")
        self._lock_retries = lock_retries
        self._labels: dict[str, dict[str, str]] = {}
        self._updated: dict[str, datetime] = {}
        self._key = str(self.root.resolve())
        self._memory: bool | None = None  # on tmpfs? looked up on first read

    # -- paths -----------------------------------------------------------

    def blob_path(self, dgst: str) -> Path:
        """Where the blob ``dgst`` lives (whether or not it exists).

        Raises:
            InvalidArgumentError: ``dgst`` is not a valid digest.
        """
        parsed = digests.parse(dgst)
        return self.root / "blobs" / parsed.algorithm / parsed.encoded

    def _ingest_dir(self, ref: str) -> Path:
        return self.root / "ingest" / _ref_dir_name(ref)

    # -- blobs -----------------------------------------------------------

    def _info_sync(self, dgst: str) -> Info:
        path = self.blob_path(dgst)
        try:
            st = path.stat()
        except FileNotFoundError:
            msg = f"content digest {dgst}"
            raise NotFoundError(msg) from None
        created = datetime.fromtimestamp(st.st_mtime, UTC)
        return Info(
            digest=dgst,
            size=st.st_size,
            created_at=created,
            updated_at=self._updated.get(dgst, created),
            labels=dict(self._labels.get(dgst, {})),
        )

    async def info(self, dgst: str) -> Info:
        """Return the blob's info.

        Raises:
            InvalidArgumentError: malformed digest.
            NotFoundError: ``content digest <d>: not found``.
        """
        return await asyncio.to_thread(self._info_sync, dgst)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        """Update mutable fields (labels only) and return the new info.

        ``fieldpaths`` may name ``labels`` (replace all) or ``labels.<key>``
        (set or, with an empty or missing value, delete one key). Without
        fieldpaths, labels are replaced.

        Raises:
            NotFoundError: the blob does not exist.
            InvalidArgumentError: a fieldpath names an immutable field.
        """
        current = await self.info(info.digest)
        labels = dict(current.labels)
        if not fieldpaths:
            labels = dict(info.labels)
        for path in fieldpaths:
            if path == "labels":
                labels = dict(info.labels)
            elif path.startswith("labels."):
                key = path.removeprefix("labels.")
                value = info.labels.get(key, "")
                if value:
                    labels[key] = value
                else:
                    labels.pop(key, None)
            else:
                msg = f"cannot update {quote(path)} field on content info {quote(info.digest)}"
                raise InvalidArgumentError(msg)
        self._set_labels(info.digest, labels)
        return replace(current, labels=labels, updated_at=self._updated[info.digest])

    def _set_labels(self, dgst: str, labels: dict[str, str]) -> None:
        if labels:
            self._labels[dgst] = labels
        else:
            self._labels.pop(dgst, None)
        self._updated[dgst] = _now()

    def _list_sync(self) -> list[Info]:
        out: list[Info] = []
        for algorithm in sorted(digests.HEX_LENGTHS):
            try:
                names = sorted(os.listdir(self.root / "blobs" / algorithm))
            except FileNotFoundError:
                continue
            for name in names:
                dgst = f"{algorithm}:{name}"
                if not digests.is_valid(dgst):
                    continue  # a stray file is not content
                with contextlib.suppress(NotFoundError):
                    out.append(self._info_sync(dgst))
        return out

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Yield the info of every blob matching any of ``filters`` (all when none).

        Filter fields: ``digest``, ``size`` and ``labels.<key>``.

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        from pycontainerd.content._filters import info_matcher

        match = info_matcher(filters)
        for info in await asyncio.to_thread(self._list_sync):
            if match(info):
                yield info

    async def delete(self, dgst: str) -> None:
        """Remove the blob.

        Raises:
            NotFoundError: ``content digest <d>: not found``.
        """
        path = self.blob_path(dgst)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            msg = f"content digest {dgst}"
            raise NotFoundError(msg) from None
        self._labels.pop(dgst, None)
        self._updated.pop(dgst, None)

    def read_now(self, dgst: str, offset: int, size: int) -> tuple[int, bytes] | None:
        """``(blob size, bytes)`` of a small range, if they can be had without waiting.

        For the daemon's fast path (``Content.Read`` answered on the event
        loop): a range of at most :data:`INLINE_READ_MAX` bytes from a memory
        file system or the page cache. ``size <= 0`` reads to the end. None
        when that cannot be done at once (a missing blob, a range past the
        end, bytes on disk): the caller then takes the normal path, which
        also produces the errors.
        """
        try:
            reader = self.open_reader(dgst)
        except (NotFoundError, InvalidArgumentError):
            return None
        try:
            if offset < 0 or offset > reader.size:
                return None
            if size <= 0 or offset + size > reader.size:
                size = reader.size - offset
            data = reader.read_now(offset, size) if size else None
        finally:
            reader.close_now()
        if data is None or len(data) != size:
            return None
        return reader.size, data

    def open_reader(self, dgst: str) -> LocalReaderAt:
        """Open the blob for random access (blocking; see :meth:`reader_at`).

        Raises:
            NotFoundError: the blob does not exist.
        """
        parsed = digests.parse(dgst)
        # A string path: pathlib's joins cost more than the open on this hot path.
        path = f"{self._blobs_dir}/{parsed.algorithm}/{parsed.encoded}"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            msg = f"content digest {dgst}"
            raise NotFoundError(msg) from None
        if self._memory is None:
            self._memory = _memory_backed(self.root)
        return LocalReaderAt(fd, os.fstat(fd).st_size, memory=self._memory)

    async def reader_at(self, dgst: str) -> LocalReaderAt:
        """Open the blob for random access; close the reader when done.

        On a memory file system the open runs on the calling thread (it cannot
        wait for a disk); elsewhere in a worker thread.

        Raises:
            NotFoundError: the blob does not exist.
        """
        if self._memory is None:
            self._memory = _memory_backed(self.root)
        if self._memory:
            return self.open_reader(dgst)
        return await asyncio.to_thread(self.open_reader, dgst)

    # -- ingests ---------------------------------------------------------

    def _status_sync(self, ref: str) -> Status:
        path = self._ingest_dir(ref)
        try:
            stored_ref = (path / "ref").read_text()
            st = (path / "data").stat()
        except FileNotFoundError:
            msg = f"reference {ref}"
            raise NotFoundError(msg) from None
        if stored_ref != ref:
            msg = f"reference {ref}: ingest holds {quote(stored_ref)}"
            raise NotFoundError(msg)
        return self._dir_status(path, ref, st)

    @staticmethod
    def _dir_status(path: Path, ref: str, st: os.stat_result) -> Status:
        mtime = datetime.fromtimestamp(st.st_mtime, UTC)
        started = _read_time(path / "startedat", mtime)
        updated = max(_read_time(path / "updatedat", started), mtime)
        try:
            total = int((path / "total").read_text())
        except (OSError, ValueError):
            total = 0
        return Status(
            ref=ref,
            offset=st.st_size,
            total=total,
            expected="",
            started_at=started,
            updated_at=updated,
        )

    async def status(self, ref: str) -> Status:
        """Return the ingest's status as recorded on disk.

        Raises:
            NotFoundError: ``reference <ref>: not found``.
        """
        return await asyncio.to_thread(self._status_sync, ref)

    def _statuses_sync(self) -> list[Status]:
        base = self.root / "ingest"
        out: list[Status] = []
        try:
            entries = sorted(os.listdir(base))
        except FileNotFoundError:
            return out
        for name in entries:
            if name.startswith("."):
                continue  # an ingest being created (or left half-created by a crash)
            path = base / name
            try:
                ref = (path / "ref").read_text()
                st = (path / "data").stat()
            except (FileNotFoundError, NotADirectoryError):
                continue  # being created or removed right now
            out.append(self._dir_status(path, ref, st))
        return out

    async def list_statuses(self, *filters: str) -> list[Status]:
        """Statuses of every ingest matching any of ``filters`` (field: ``ref``).

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        from pycontainerd.content._filters import status_matcher

        match = status_matcher(filters)
        return [s for s in await asyncio.to_thread(self._statuses_sync) if match(s)]

    async def abort(self, ref: str) -> None:
        """Remove the ingest ``ref``.

        Raises:
            NotFoundError: ``reference <ref>: not found``.
        """
        path = self._ingest_dir(ref)

        def _rm() -> None:
            if not (path / "ref").exists():
                msg = f"reference {ref}"
                raise NotFoundError(msg)
            shutil.rmtree(path)

        await asyncio.to_thread(_rm)

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> LocalWriter:
        """Open (or resume) the ingest ``ref`` and lock it.

        Args:
            ref: the ingest's reference; required.
            total: the blob's size when known.
            expected: the blob's digest when known; if that blob is already
                committed, nothing is opened.

        Raises:
            InvalidArgumentError: empty ref or malformed expected digest.
            AlreadyExistsError: ``content <expected>: already exists``.
            UnavailableError: ``ref <ref> locked for <age> (since <time>)``
                after ``lock_retries`` attempts.
            FailedPreconditionError: ``total`` differs from the stored total.
        """
        if not ref:
            msg = "ref must not be empty"
            raise InvalidArgumentError(msg)
        if expected:
            await self._refuse_existing(expected)
        await self._lock(ref)
        try:
            if expected:
                # Checked again under the lock: a writer of this ref that held
                # it may just have published the blob.
                await self._refuse_existing(expected)
            return await asyncio.to_thread(self._open_writer, ref, total, expected)
        except BaseException:
            self._release(ref)
            raise

    async def _refuse_existing(self, expected: str) -> None:
        if await asyncio.to_thread(self.blob_path(expected).exists):
            msg = f"content {expected}"
            raise AlreadyExistsError(msg)

    async def _lock(self, ref: str) -> None:
        for attempt in range(self._lock_retries + 1):
            try:
                _LOCKS.try_lock(self._key, ref)
            except UnavailableError:
                if attempt == self._lock_retries:
                    raise
                # random exponential back-off, as upstream (1 ms .. 2^n ms)
                await asyncio.sleep(random.uniform(0, 2**attempt) / 1000)  # noqa: S311
            else:
                return

    def _release(self, ref: str) -> None:
        _LOCKS.unlock(self._key, ref)

    def _open_writer(self, ref: str, total: int, expected: str) -> LocalWriter:
        path = self._ingest_dir(ref)
        now = _now()
        if (path / "ref").exists():
            stored_ref = (path / "ref").read_text()
            if stored_ref != ref:
                msg = f"ingest directory of {quote(ref)} holds {quote(stored_ref)}"
                raise FailedPreconditionError(msg)
            stored = self._dir_status(path, ref, (path / "data").stat())
            if total > 0 and stored.total > 0 and total != stored.total:
                msg = f"provided total differs from status: {total} != {stored.total}"
                raise FailedPreconditionError(msg)
            started_at, updated_at = stored.started_at, stored.updated_at
            if total > 0 and stored.total == 0:
                _write_atomic(path / "total", str(total))
            total = total or stored.total
        else:
            (self.root / "ingest").mkdir(parents=True, exist_ok=True)
            # build the ingest in a temporary directory and rename it in, so a
            # crash never leaves an ingest without its ref file
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(mode=0o755)
            (tmp / "ref").write_text(ref)
            stamp = format_rfc3339(now)
            (tmp / "startedat").write_text(stamp)
            (tmp / "updatedat").write_text(stamp)
            if total > 0:
                (tmp / "total").write_text(str(total))
            (tmp / "data").touch(mode=0o644)
            try:
                tmp.rename(path)
            except OSError as exc:  # a leftover half-created dir from a crash
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                shutil.rmtree(path)
                tmp.rename(path)
            started_at = updated_at = now
        fd = os.open(path / "data", os.O_RDWR | os.O_CLOEXEC)
        try:
            # another process (a second daemon over the same root) holds it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                msg = f"ref {ref} locked by another process"
                raise UnavailableError(msg) from None
            hasher = hashlib.sha256()
            offset = 0
            while chunk := os.pread(fd, CHUNK_SIZE, offset):
                hasher.update(chunk)
                offset += len(chunk)
        except BaseException:
            os.close(fd)
            raise
        return LocalWriter(
            self,
            ref,
            path,
            fd,
            offset=offset,
            hasher=hasher,
            total=total,
            expected=expected,
            started_at=started_at,
            updated_at=updated_at,
        )

    def _publish(self, ingest: Path, dgst: str) -> None:
        """Move a verified ingest into ``blobs/`` (runs in a worker thread)."""
        data = ingest / "data"
        target = self.blob_path(dgst)
        target.parent.mkdir(parents=True, exist_ok=True)
        mode = data.stat().st_mode & 0o777
        data.chmod(mode & ~0o222)
        try:
            # link(2) never replaces an existing file: a concurrent commit of
            # the same digest makes this one fail atomically
            os.link(data, target)
        except FileExistsError:
            shutil.rmtree(ingest, ignore_errors=True)
            msg = f"content {dgst}"
            raise AlreadyExistsError(msg) from None
        now = time.time()
        os.utime(target, (now, now))
        _fsync_dir(target.parent)
        shutil.rmtree(ingest, ignore_errors=True)

    # -- expiry ----------------------------------------------------------

    async def expired_ingests(
        self, now: datetime | None = None, max_age: timedelta = INGEST_EXPIRY
    ) -> list[Status]:
        """Ingests not written for ``max_age`` (default 24 h) and not locked.

        The store does not know about leases: the caller (the metadata GC)
        filters out leased ingests before calling ``abort`` on the rest.
        """
        cutoff = (now or _now()) - max_age
        return [
            s
            for s in await asyncio.to_thread(self._statuses_sync)
            if s.updated_at < cutoff and not _LOCKS.held(self._key, s.ref)
        ]

    async def cleanup_expired(
        self,
        now: datetime | None = None,
        max_age: timedelta = INGEST_EXPIRY,
        *,
        keep: Callable[[str], bool] | None = None,
    ) -> list[str]:
        """Abort expired ingests; returns the refs removed.

        Args:
            now: the current time (tests pass a fixed one).
            max_age: how long an idle ingest lives.
            keep: returns true for refs that must survive (leased ingests).
        """
        removed: list[str] = []
        for status in await self.expired_ingests(now, max_age):
            if keep is not None and keep(status.ref):
                continue
            with contextlib.suppress(NotFoundError):
                await self.abort(status.ref)
                removed.append(status.ref)
        return removed

    def exports(self) -> dict[str, str]:
        """What ``ctr plugins ls -d`` shows for the plugin."""
        return {"root": str(self.root)}


def ingest_refs(statuses: Iterable[Status]) -> list[str]:
    """The refs of ``statuses`` (a small helper for callers and tests)."""
    return [s.ref for s in statuses]
