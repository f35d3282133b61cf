"""The applier process: same results as the thread path, and its life cycle (real processes)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import signal
import stat
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core import testing
from pycontainerd.core.errdefs import InternalError, UnavailableError
from pycontainerd.core.plugin import Closable
from pycontainerd.core.types import Descriptor, Mount
from pycontainerd.snapshots.applyworker import BACKGROUND_NICE, ApplyWorkers
from pycontainerd.snapshots.differ import MEDIA_TYPE_LAYER, WalkingDiffer
from pycontainerd.snapshots.testing import applier_pids, make_tar, put_blob, tar_entry

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from pycontainerd.core.content import ReaderAt, Store

pytestmark = pytest.mark.usefixtures("needs_root")

D, S, L = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
WORKER_MODULE = "pycontainerd.snapshots.applyworker"


#: Times from this one on were stamped by an apply (not taken from a layer).
STARTED = time.time_ns()


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Everything below ``root``: type, mode, owner, device, times, xattrs, content."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            xattrs = sorted(
                (k, os.getxattr(path, k, follow_symlinks=False))
                for k in os.listxattr(path, follow_symlinks=False)
            )
            if stat.S_ISLNK(st.st_mode):
                body: object = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                body = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                body = None
            mtime: object = None if stat.S_ISDIR(st.st_mode) else st.st_mtime_ns
            if isinstance(mtime, int) and mtime >= STARTED:
                mtime = "now"
            out[os.path.relpath(path, root)] = (
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_rdev,
                mtime,
                st.st_nlink,
                xattrs,
                body,
            )
    return out


def alive(pid: int) -> bool:
    """``pid`` runs (exists and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def reaped(pid: int) -> bool:
    """``pid`` is gone, not even a zombie waiting for its parent."""
    return not os.path.exists(f"/proc/{pid}")


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False


def bind(path: Path) -> list[Mount]:
    return [Mount(type="bind", source=str(path), options=("rw", "rbind"))]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """An empty directory to apply into, next to the content store."""
    (tmp_path / "target").mkdir()
    return tmp_path / "target"


@pytest.fixture
async def pool() -> AsyncIterator[ApplyWorkers]:
    workers = ApplyWorkers()
    workers.start()
    try:
        yield workers
    finally:
        await workers.aclose()


async def layer(store: Store, *entries: tuple[tarfile.TarInfo, bytes | None]) -> Descriptor:
    blob = make_tar(*entries)
    return Descriptor(
        media_type=MEDIA_TYPE_LAYER, digest=await put_blob(store, blob), size=len(blob)
    )


SIMPLE = (tar_entry("d", D, mode=0o755), tar_entry("d/f", data=b"hi"))


# --- the same results both ways -----------------------------------------------------------


async def apply_both_ways(
    store: Store, pool: ApplyWorkers, desc: Descriptor, make_mounts: object, tmp_path: Path
) -> list[tuple[object, dict[str, tuple[object, ...]]]]:
    """Apply ``desc`` in a thread and in the applier; each outcome and the box's tree."""
    outcomes = []
    for name, workers in (("thread", None), ("process", pool)):
        box = tmp_path / name
        box.mkdir()
        mounts = make_mounts(box)  # type: ignore[operator]
        try:
            got: object = await WalkingDiffer(store, workers=workers).apply(desc, mounts)
        except Exception as exc:  # the outcome compared is the exception
            filename = getattr(exc, "filename", None)
            got = (
                type(exc),
                str(exc).replace(str(box), "<box>"),
                getattr(exc, "errno", None),
                None if filename is None else os.fsdecode(filename).replace(str(box), "<box>"),
            )
        outcomes.append((got, tree(box)))
    return outcomes


def hostile_layers(outside: str) -> dict[str, bytes]:
    return {
        "dotdot": make_tar(tar_entry("../outside/pwned", data=b"x")),
        "symlink-parent": make_tar(
            tar_entry("link", S, linkname=outside), tar_entry("link/pwned", data=b"x")
        ),
        "hardlink-missing": make_tar(tar_entry("hl", L, linkname="../outside/secret")),
        "symlink-loop": make_tar(
            tar_entry("x", S, linkname="y"),
            tar_entry("y", S, linkname="x"),
            tar_entry("x/f", data=b""),
        ),
        "truncated": make_tar(tar_entry("f", data=b"x" * 5000))[:1200],
        "name-too-long": make_tar(tar_entry("d", D), tar_entry("d/" + "n" * 300, data=b"x")),
        "not-a-tar": b"\x01" * 2048,
    }


@pytest.mark.parametrize("case", sorted(hostile_layers("/x")))
async def test_hostile_and_malformed_layers_fail_and_land_alike(
    tmp_path: Path, store: Store, pool: ApplyWorkers, case: str
) -> None:
    outside = tmp_path / "outside"
    blob = hostile_layers(str(outside))[case]
    desc = Descriptor(
        media_type=MEDIA_TYPE_LAYER, digest=await put_blob(store, blob), size=len(blob)
    )

    def mounts(box: Path) -> list[Mount]:
        (box / "target").mkdir()
        return bind(box / "target")

    (thread, thread_tree), (process, process_tree) = await apply_both_ways(
        store, pool, desc, mounts, tmp_path
    )
    assert process == thread
    assert process_tree == thread_tree
    assert not outside.exists()


async def test_errors_keep_kind_text_errno_and_file_name(
    tmp_path: Path, store: Store, pool: ApplyWorkers
) -> None:
    outcomes = {}
    for case in ("symlink-loop", "name-too-long", "not-a-tar"):
        blob = hostile_layers("/x")[case]
        desc = Descriptor(
            media_type=MEDIA_TYPE_LAYER, digest=await put_blob(store, blob), size=len(blob)
        )
        target = tmp_path / case
        target.mkdir()
        with pytest.raises(Exception) as caught:  # noqa: PT011 - the kinds differ per case
            await WalkingDiffer(store, workers=pool).apply(desc, bind(target))
        outcomes[case] = caught.value
    assert "too many levels of symbolic links" in str(outcomes["symlink-loop"])
    too_long = outcomes["name-too-long"]
    assert isinstance(too_long, OSError)
    assert too_long.errno == errno.ENAMETOOLONG
    assert type(outcomes["not-a-tar"]).__name__ == "InvalidArgumentError"


async def test_overlay_upper_whiteouts_and_opaque_directories_alike(
    tmp_path: Path, store: Store, pool: ApplyWorkers
) -> None:
    lower = tmp_path / "lower"
    (lower / "opaque" / "old").mkdir(parents=True)
    (lower / "gone").write_bytes(b"")
    desc = await layer(
        store,
        tar_entry("opaque", D, mode=0o755),
        tar_entry("opaque/.wh..wh..opq"),
        tar_entry("opaque/new", data=b"n"),
        tar_entry(".wh.gone"),
        tar_entry("added", data=b"a"),
    )

    def mounts(box: Path) -> list[Mount]:
        (box / "upper").mkdir()
        (box / "work").mkdir()
        options = (f"lowerdir={lower}", f"upperdir={box / 'upper'}", f"workdir={box / 'work'}")
        return [Mount(type="overlay", source="overlay", options=options)]

    (thread, thread_tree), (process, process_tree) = await apply_both_ways(
        store, pool, desc, mounts, tmp_path
    )
    assert process == thread
    assert isinstance(process, Descriptor)
    assert process_tree == thread_tree
    assert stat.S_ISCHR(os.lstat(tmp_path / "process" / "upper" / "gone").st_mode)
    opaque = tmp_path / "process" / "upper" / "opaque"
    assert os.getxattr(opaque, "trusted.overlay.opaque") == b"y"


async def test_a_request_too_large_for_a_message_is_applied_in_a_thread(
    tmp_path: Path, store: Store, pool: ApplyWorkers
) -> None:
    ready = pool.ready_pid
    lower = tmp_path / "lower"
    (lower / "d").mkdir(parents=True)
    os.chmod(lower / "d", 0o700)
    # thousands of lower directories, most of them absent: a JSON request of megabytes
    lowers = [str(tmp_path / f"{'x' * 200}-{i}") for i in range(10_000)]
    upper, work = tmp_path / "upper", tmp_path / "work"
    upper.mkdir()
    work.mkdir()
    options = (f"lowerdir={':'.join([str(lower), *lowers])}", f"upperdir={upper}", "workdir=/w")
    desc = await layer(store, tar_entry("d/f", data=b"hi"))
    mounts = [Mount(type="overlay", source="overlay", options=options)]
    applied = await WalkingDiffer(store, workers=pool).apply(desc, mounts)
    assert applied.digest == desc.digest
    assert (upper / "d" / "f").read_bytes() == b"hi"
    assert stat.S_IMODE(os.stat(upper / "d").st_mode) == 0o700  # taken from the lower
    assert pool.ready_pid == ready
    assert ready is not None
    assert alive(ready)


class _RemoteLikeStore:
    """The real store, its readers without a file descriptor (as a store behind gRPC)."""

    class _Reader:
        def __init__(self, inner: ReaderAt) -> None:
            self._inner = inner
            self.size = inner.size

        async def read_at(self, offset: int, size: int) -> bytes:
            return await self._inner.read_at(offset, size)

        async def close(self) -> None:
            await self._inner.close()

    def __init__(self, store: Store) -> None:
        self._store = store

    async def reader_at(self, digest: str) -> ReaderAt:
        return self._Reader(await self._store.reader_at(digest))


async def test_a_blob_without_a_file_goes_through_a_thread(target: Path, store: Store) -> None:
    workers = ApplyWorkers()
    await workers.aclose()  # a closed pool refuses every apply: only the thread path can work
    desc = await layer(store, *SIMPLE)
    differ = WalkingDiffer(_RemoteLikeStore(store), workers=workers)  # type: ignore[arg-type]
    applied = await differ.apply(desc, bind(target))
    assert applied.digest == desc.digest  # uncompressed: the diff ID is the blob's digest
    assert (target / "d" / "f").read_bytes() == b"hi"
    with pytest.raises(UnavailableError, match="layer applier is shut down"):
        await WalkingDiffer(store, workers=workers).apply(desc, bind(target))


# --- life cycle --------------------------------------------------------------------------------


async def test_the_ready_worker_serves_applies_and_stays(
    tmp_path: Path, store: Store, pool: ApplyWorkers
) -> None:
    ready = pool.ready_pid
    assert ready is not None
    assert applier_pids(os.getpid()) == [ready]
    desc = await layer(store, *SIMPLE)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        applied = await WalkingDiffer(store, workers=pool).apply(desc, bind(tmp_path / name))
        assert applied.digest == desc.digest
        assert (tmp_path / name / "d" / "f").read_bytes() == b"hi"
    assert pool.ready_pid == ready
    assert pool.pids() == [ready]


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


async def test_the_worker_keeps_freed_memory_for_the_next_layer(
    tmp_path: Path, store: Store, pool: ApplyWorkers
) -> None:
    # without it each megabyte buffer of an apply is a fresh mapping: over a thousand page
    # faults for this layer, every time, and a slower apply than in the daemon's own heap
    desc = await layer(store, tar_entry("big", data=os.urandom(6 << 20)))
    faults = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        await WalkingDiffer(store, workers=pool).apply(desc, bind(tmp_path / name))
        ready = pool.ready_pid
        assert ready is not None
        faults.append(minor_faults(ready))
    # 0 most times; now and then one fresh 1 MiB buffer (256 pages, another thread's arena)
    assert faults[2] - faults[1] <= 512, faults


def _may_go_back() -> bool:
    """Root in the initial user namespace: a lowered priority may be raised again."""
    with open("/proc/self/uid_map") as f:
        return os.geteuid() == 0 and f.read().split() == ["0", "0", "4294967295"]


@pytest.mark.parametrize("woken_by", ["first apply", "starting pull"])
async def test_the_ready_worker_waits_in_the_background_until_it_is_needed(
    tmp_path: Path, store: Store, pool: ApplyWorkers, woken_by: str
) -> None:
    # started with the daemon, it imports at a lower priority than the daemon's boot; a
    # pull that starts (expect_applies) or its first apply brings it back (where it may
    # go back: root in the initial user namespace)
    pid = pool.ready_pid
    assert pid is not None
    base = os.getpriority(os.PRIO_PROCESS, 0)
    waiting = BACKGROUND_NICE if _may_go_back() and base < BACKGROUND_NICE else base
    assert os.getpriority(os.PRIO_PROCESS, pid) == waiting
    differ = WalkingDiffer(store, workers=pool)
    if woken_by == "starting pull":
        differ.expect_applies()
    else:
        applied = await differ.apply(await layer(store, *SIMPLE), bind(tmp_path))
        assert (tmp_path / "d" / "f").read_bytes() == b"hi"
        assert applied.size > 0
    assert pool.ready_pid == pid
    assert os.getpriority(os.PRIO_PROCESS, pid) == base


async def test_the_worker_leaves_sigterm_and_sigint_to_the_daemon(
    tmp_path: Path, store: Store, pool: ApplyWorkers
) -> None:
    desc = await layer(store, *SIMPLE)
    differ = WalkingDiffer(store, workers=pool)
    (tmp_path / "a").mkdir()
    await differ.apply(desc, bind(tmp_path / "a"))  # it runs: its handlers are set
    ready = pool.ready_pid
    assert ready is not None
    os.kill(ready, signal.SIGTERM)
    os.kill(ready, signal.SIGINT)
    (tmp_path / "b").mkdir()
    await differ.apply(desc, bind(tmp_path / "b"))
    assert pool.ready_pid == ready
    assert alive(ready)


async def test_overlapping_applies_get_a_worker_each_and_one_stays(
    target: Path, store: Store, pool: ApplyWorkers
) -> None:
    desc = await layer(store, *SIMPLE)
    targets = [target / str(i) for i in range(3)]
    for each in targets:
        each.mkdir()
    differ = WalkingDiffer(store, workers=pool)
    results = await asyncio.gather(*(differ.apply(desc, bind(t)) for t in targets))
    assert {r.digest for r in results} == {desc.digest}
    assert all((t / "d" / "f").read_bytes() == b"hi" for t in targets)
    assert len(pool.pids()) == 1
    await testing.wait_for_async(lambda: len(applier_pids(os.getpid())) == 1, what="extras exit")


async def test_a_worker_killed_while_ready_is_replaced_by_the_next_apply(
    target: Path, store: Store, pool: ApplyWorkers
) -> None:
    killed = pool.ready_pid
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    testing.wait_for(lambda: zombie(killed), what="the worker to die")
    desc = await layer(store, *SIMPLE)
    await WalkingDiffer(store, workers=pool).apply(desc, bind(target))
    assert (target / "d" / "f").read_bytes() == b"hi"
    assert pool.ready_pid not in {None, killed}
    assert reaped(killed)  # reaped


async def apply_in_flight(
    store: Store, pool: ApplyWorkers, desc: Descriptor, target: Path
) -> tuple[int, asyncio.Future[Descriptor]]:
    """An apply sent to the ready worker, stopped (SIGSTOP) before it reads it; its pid."""
    worker = pool.ready_pid
    assert worker is not None
    os.kill(worker, signal.SIGSTOP)
    applying = asyncio.ensure_future(WalkingDiffer(store, workers=pool).apply(desc, bind(target)))
    await testing.wait_for_async(lambda: pool.ready_pid is None, what="the apply to be sent")
    return worker, applying


async def test_a_worker_dying_mid_apply_fails_it_with_its_pid_and_how_it_ended(
    target: Path, store: Store, pool: ApplyWorkers
) -> None:
    desc = await layer(store, *SIMPLE)
    worker, applying = await apply_in_flight(store, pool, desc, target)
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(InternalError, match=f"process {worker} was killed by SIGKILL while"):
        await applying
    assert os.listdir(target) == []
    assert reaped(worker)
    fresh = pool.ready_pid
    assert fresh not in {None, worker}
    await WalkingDiffer(store, workers=pool).apply(desc, bind(target))
    assert (target / "d" / "f").read_bytes() == b"hi"


async def test_a_cancelled_apply_kills_and_reaps_its_worker_before_returning(
    target: Path, store: Store, pool: ApplyWorkers
) -> None:
    worker, applying = await apply_in_flight(store, pool, await layer(store, *SIMPLE), target)
    applying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await applying
    assert reaped(worker)  # killed and reaped, not only signalled
    assert os.listdir(target) == []
    fresh = pool.ready_pid
    assert fresh is not None
    assert fresh != worker
    assert alive(fresh)


async def test_a_worker_that_cannot_start_leaves_applies_to_threads(
    tmp_path: Path,
    target: Path,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the worker's interpreter finds a broken applier first on its path (this one has its own)
    fake = tmp_path / "fake" / "pycontainerd" / "snapshots"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "applyworker.py").write_text("raise SystemExit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    pool = ApplyWorkers()
    try:
        pool.start()
        broken = pool.ready_pid
        assert broken is not None
        testing.wait_for(lambda: zombie(broken), what="the broken worker to exit")
        desc = await layer(store, *SIMPLE)
        for name in ("a", "b"):
            (target / name).mkdir()
            await WalkingDiffer(store, workers=pool).apply(desc, bind(target / name))
            assert (target / name / "d" / "f").read_bytes() == b"hi"
        assert pool.pids() == []
        assert reaped(broken)
        assert f"layer applier process {broken} exited with status 3" in caplog.text
    finally:
        await pool.aclose()


async def test_aclose_ends_and_reaps_every_worker(target: Path, store: Store) -> None:
    pool = ApplyWorkers()
    pool.start()
    ready = pool.ready_pid
    assert ready is not None
    await WalkingDiffer(store, workers=pool).apply(await layer(store, *SIMPLE), bind(target))
    differ = WalkingDiffer(store, workers=pool)
    assert isinstance(differ, Closable)  # the daemon closes it at stop
    await differ.aclose()
    assert pool.pids() == []
    assert reaped(ready)
    assert applier_pids(os.getpid()) == []
    pool.start()  # closed: starts nothing
    assert pool.ready_pid is None


def test_workers_start_only_on_the_event_loop_thread() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        ApplyWorkers().start()


# --- in the daemon -------------------------------------------------------------------------


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="applier-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _boot(base: Path) -> tuple[testing.Daemon, int]:
    pytest.importorskip("pycontainerd.daemon")
    daemon = testing.Daemon(base, env=testing.daemon_env(testing.STORE_PLUGINS))
    proc = daemon.start().proc
    assert proc is not None
    testing.wait_for(lambda: applier_pids(proc.pid), what="the applier process")
    return daemon, applier_pids(proc.pid)[0]


@pytest.mark.system
def test_the_daemon_starts_one_applier_and_stops_it(base: Path) -> None:
    daemon, worker = _boot(base)
    try:
        assert daemon.proc is not None
        assert applier_pids(daemon.proc.pid) == [worker]
        assert daemon.stop() == 0
        assert not alive(worker)
        assert "failed to close plugin" not in daemon.log()
    finally:
        daemon.kill()


@pytest.mark.system
def test_the_applier_dies_with_a_killed_daemon(base: Path) -> None:
    daemon, worker = _boot(base)
    try:
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        testing.wait_for(lambda: not alive(worker), what="the applier to die with the daemon")
    finally:
        daemon.kill()


# --- import weight ---------------------------------------------------------------------------


def test_the_worker_imports_no_grpc() -> None:
    # what the worker imports: this module, then load_applier()'s
    modules = f"{WORKER_MODULE}, pycontainerd.snapshots.differ, pycontainerd.snapshots.apply"
    testing.check_import_leaves_out(modules, "grpc")
    testing.check_import_leaves_out(modules, "google.protobuf")
