"""The local store: conformance suite plus layout, durability and fault tests."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.content.testing import ContentStoreSuite, read_all, sha256, write_blob
from pycontainerd.core.content import Store
from pycontainerd.core.errdefs import AlreadyExistsError, NotFoundError, UnavailableError


class TestLocalStore(ContentStoreSuite):
    @pytest.fixture
    def store(self, tmp_path: Path) -> LocalStore:
        return LocalStore(tmp_path / "content")


def test_local_store_implements_the_contract(tmp_path: Path) -> None:
    store: Store = LocalStore(tmp_path)
    assert isinstance(store, Store)


async def test_upstream_layout(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    writer = await store.writer("my-ref", total=5)
    await writer.write(b"hel")
    ingest = tmp_path / "ingest" / hashlib.sha256(b"my-ref").hexdigest()
    assert (ingest / "ref").read_text() == "my-ref"
    assert (ingest / "total").read_text() == "5"
    assert (ingest / "data").read_bytes() == b"hel"
    for name in ("startedat", "updatedat"):
        text = (ingest / name).read_text()
        assert text.endswith("Z")
        assert "T" in text
    await writer.write(b"lo")
    dgst = await writer.commit(5, sha256(b"hello"))
    blob = tmp_path / "blobs" / "sha256" / dgst.removeprefix("sha256:")
    assert blob.read_bytes() == b"hello"
    assert stat.S_IMODE(blob.stat().st_mode) & 0o222 == 0, "committed blob must be read-only"
    assert not ingest.exists()
    assert os.listdir(tmp_path / "ingest") == []


async def test_lock_is_shared_across_store_objects_on_one_root(tmp_path: Path) -> None:
    one = LocalStore(tmp_path, lock_retries=1)
    two = LocalStore(tmp_path, lock_retries=1)
    writer = await one.writer("shared")
    with pytest.raises(UnavailableError, match="ref shared locked for"):
        await two.writer("shared")
    await writer.close()
    await (await two.writer("shared")).close()


async def test_ref_stays_locked_until_the_commit_published_the_blob(tmp_path: Path) -> None:
    """A second writer of a ref being committed sees the published blob, not the ingest."""
    store = LocalStore(tmp_path, lock_retries=14)  # enough back-off for a loaded machine
    data = os.urandom(256 * 1024)
    first = await store.writer("same", total=len(data))
    await first.write(data)
    commit = asyncio.create_task(first.commit(len(data), sha256(data)))
    # Asked while the first commit runs: waits for the lock, then finds the blob.
    with pytest.raises(AlreadyExistsError, match=f"content {sha256(data)}"):
        await store.writer("same", total=len(data), expected=sha256(data))
    assert await commit == sha256(data)
    # Without an expected digest the ref opens afresh: the old ingest is gone whole.
    again = await store.writer("same", total=len(data))
    assert (await again.status()).offset == 0
    await again.write(data)
    with pytest.raises(AlreadyExistsError):
        await again.commit(len(data), sha256(data))
    assert await store.list_statuses() == []


async def test_a_cancelled_commit_publishes_before_the_ref_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelling the committer does not free the ref while its blob is being published."""
    store = LocalStore(tmp_path, lock_retries=0)
    data = b"cancelled commit " * 4096
    publishing, go_on = threading.Event(), threading.Event()
    publish = store._publish

    def held_publish(ingest: Path, dgst: str) -> None:
        publishing.set()
        go_on.wait(60)
        publish(ingest, dgst)

    monkeypatch.setattr(store, "_publish", held_publish)
    writer = await store.writer("ref", total=len(data))
    await writer.write(data)
    commit = asyncio.create_task(writer.commit(len(data), sha256(data)))
    try:
        await asyncio.to_thread(publishing.wait, 60)
        commit.cancel()
        for _ in range(3):  # let the task take its cancellation
            await asyncio.sleep(0)
        with pytest.raises(UnavailableError, match="ref ref locked"):
            await store.writer("ref")
    finally:
        go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await commit
    assert await read_all(store, sha256(data)) == data
    assert await store.list_statuses() == []
    await (await store.writer("ref")).close()


async def test_racing_writers_of_one_ref_get_only_upstream_answers(tmp_path: Path) -> None:
    """Two writers of one ref at once: each commits, or is told locked / already exists."""
    store = LocalStore(tmp_path)
    outcomes: list[str] = []

    async def one(ref: str, data: bytes, expected: str) -> None:
        try:
            writer = await store.writer(ref, total=len(data), expected=expected)
            if (await writer.status()).offset:
                await writer.truncate(0)
            await writer.write(data)
            await writer.commit(len(data), sha256(data))
        except (UnavailableError, AlreadyExistsError) as exc:
            outcomes.append(type(exc).__name__)
        else:
            outcomes.append("committed")

    for i in range(60):
        data = f"blob {i} ".encode() * 4096
        expected = sha256(data) if i % 2 else ""
        await asyncio.gather(one(f"r{i}", data, expected), one(f"r{i}", data, expected))
        assert await read_all(store, sha256(data)) == data
    # Anything else (a FileNotFoundError from a half-removed ingest) fails the gather.
    assert outcomes.count("committed") == 60
    assert await store.list_statuses() == []


async def test_stray_files_are_not_content(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    dgst = await write_blob(store, "real", b"real")
    (tmp_path / "blobs" / "sha256" / "not-a-digest").write_text("junk")
    assert [i.digest async for i in store.walk()] == [dgst]


async def test_interrupted_ingest_resumes_and_never_shows_a_blob(tmp_path: Path) -> None:
    """A stream cut mid-blob: the writer is dropped, the data stays, the ref resumes."""
    store = LocalStore(tmp_path)
    data = os.urandom(3 * 1024 * 1024 + 17)
    writer = await store.writer("cut", total=len(data), expected=sha256(data))
    await writer.write(data[: 1024 * 1024])
    await writer.close()  # what the service does when the client goes away
    assert [i async for i in store.walk()] == []
    status = await store.status("cut")
    assert (status.offset, status.total) == (1024 * 1024, len(data))
    writer = await store.writer("cut", total=len(data), expected=sha256(data))
    assert writer.digest() == sha256(data[: 1024 * 1024])
    await writer.write(data[1024 * 1024 :])
    dgst = await writer.commit(len(data), sha256(data))
    assert await read_all(store, dgst) == data


async def test_expired_ingests(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for ref in ("old", "busy"):
        writer = await store.writer(ref)
        await writer.write(b"x")
        await writer.close()
    busy = await store.writer("busy")
    now = datetime.now(UTC)
    assert await store.expired_ingests(now) == []
    later = now + timedelta(hours=24, seconds=1)
    assert [s.ref for s in await store.expired_ingests(later)] == ["old"]
    assert await store.cleanup_expired(later, keep=lambda ref: ref == "old") == []
    assert await store.cleanup_expired(later) == ["old"]
    with pytest.raises(NotFoundError):
        await store.status("old")
    await busy.close()
    assert [s.ref for s in await store.list_statuses()] == ["busy"]


_KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pycontainerd.content.local import LocalStore

    async def main() -> None:
        store = LocalStore(sys.argv[1])
        data = open(sys.argv[2], "rb").read()
        writer = await store.writer("killed", total=len(data))
        half = len(data) // 2
        await writer.write(data[:half])
        print("half", flush=True)
        await asyncio.sleep(3600)  # killed here

    asyncio.run(main())
    """
)


async def test_sigkill_during_ingest_leaves_no_blob_and_resumes(tmp_path: Path) -> None:
    root = tmp_path / "content"
    payload = tmp_path / "payload"
    data = os.urandom(2 * 1024 * 1024 + 5)
    payload.write_bytes(data)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _KILLED_WRITER,
        str(root),
        str(payload),
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.strip() == b"half"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    store = LocalStore(root)
    assert [i async for i in store.walk()] == []
    assert not (root / "blobs").exists() or not any((root / "blobs").rglob("*/*"))
    status = await store.status("killed")
    half = len(data) // 2
    assert (status.offset, status.total) == (half, len(data))
    writer = await store.writer("killed", total=len(data))  # the dead process held no lock
    assert writer.digest() == sha256(data[:half])
    await writer.write(data[half:])
    dgst = await writer.commit(len(data), sha256(data))
    assert await read_all(store, dgst) == data


@pytest.mark.parametrize("where", ["disk", "memory"])
async def test_small_reads_match_the_file_on_every_path(tmp_path: Path, where: str) -> None:
    # small reads may skip the worker thread (tmpfs, or RWF_NOWAIT from the page
    # cache); whichever path runs, the bytes and the short read at the end are the same
    base = tmp_path
    if where == "memory":
        if not Path("/dev/shm").is_dir():  # noqa: ASYNC240 - a test precondition
            pytest.skip("no /dev/shm")
        import tempfile

        base = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        store = LocalStore(base / "content")
        data = os.urandom(300_000)
        dgst = await write_blob(store, "r", data)
        reader = await store.reader_at(dgst)
        try:
            assert reader.size == len(data)
            got = [await reader.read_at(off, 32768) for off in range(0, len(data), 32768)]
            assert b"".join(got) == data
            assert len(got[-1]) == len(data) % 32768
            assert await reader.read_at(len(data), 10) == b""
            assert await reader.read_at(5, 1 << 20) == data[5:]  # above the inline size
        finally:
            await reader.close()
    finally:
        if base is not tmp_path:
            import shutil

            shutil.rmtree(base)


def test_memory_backed_detection() -> None:
    from pycontainerd.content.local import _memory_backed

    assert not _memory_backed(Path("/proc/self"))  # procfs
    if os.path.isdir("/dev/shm"):
        assert _memory_backed(Path("/dev/shm/not-created-yet"))


async def test_uncached_or_unsupported_nowait_falls_back_to_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    store = LocalStore(tmp_path)
    data = os.urandom(100_000)
    dgst = await write_blob(store, "r", data)
    reader = await store.reader_at(dgst)
    reader._memory = False
    calls: list[int] = []

    def not_cached(fd: int, bufs: object, offset: int, flags: int = 0) -> int:
        calls.append(offset)
        raise BlockingIOError(errno.EAGAIN, "would block")

    monkeypatch.setattr(os, "preadv", not_cached, raising=False)
    monkeypatch.setattr(os, "RWF_NOWAIT", 8, raising=False)
    reader._nowait = True
    assert await reader.read_at(10, 1000) == data[10:1010]
    assert calls == [10]

    def unsupported(fd: int, bufs: object, offset: int, flags: int = 0) -> int:
        raise OSError(errno.EOPNOTSUPP, "not supported")

    monkeypatch.setattr(os, "preadv", unsupported)
    assert await reader.read_at(0, 1000) == data[:1000]
    assert reader._nowait is False  # remembered: no more attempts
    await reader.close()
