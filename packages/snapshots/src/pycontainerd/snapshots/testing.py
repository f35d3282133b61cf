"""Conformance tests every Snapshotter must pass (cf. containerd's snapshotter test suite).

Use it by subclassing :class:`SnapshotterSuite` in a test module and providing
the ``snapshotter`` fixture::

    class TestOverlay(SnapshotterSuite):
        @pytest.fixture
        async def snapshotter(self, tmp_path: Path) -> AsyncIterator[Snapshotter]:
            sn = OverlaySnapshotter(tmp_path / "root")
            yield sn
            await sn.close()

The tests mount what the snapshotter hands out (they need root, as mounting
does), write through the mounts and read back through views, so they check
real filesystem behaviour, not just bookkeeping. They run unchanged against a
remote snapshotter proxy whose daemon runs on the same machine.
"""

# ruff: noqa: S101, PT011, S103 - a test suite asserts, checks errno, sets set-id bits

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tarfile
import tempfile
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core import errdefs
from pycontainerd.core.snapshots import Cleaner, Info, Kind, Snapshotter
from pycontainerd.snapshots.mount import with_temp_mounts

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from pycontainerd.core.content import Store
    from pycontainerd.core.types import Mount

__all__ = ["SnapshotterSuite", "applier_pids", "make_tar", "mounted", "put_blob", "tar_entry"]


def applier_pids(parent: int) -> list[int]:
    """The live layer applier processes (``applyworker``) whose parent is ``parent``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{entry.path}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"{entry.path}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if (
            int(fields[1]) == parent
            and fields[0] != "Z"
            and b"pycontainerd.snapshots.applyworker" in argv
        ):
            found.append(int(entry.name))
    return found


@contextlib.asynccontextmanager
async def mounted(mounts: Sequence[Mount]) -> AsyncIterator[Path]:
    """Mount ``mounts`` on a temporary directory for the block."""
    base = tempfile.mkdtemp(prefix="sn-suite-", dir="/tmp")
    try:
        async with with_temp_mounts(mounts, location=base) as target:
            yield target
    finally:
        os.rmdir(base)


async def _write(sn: Snapshotter, key: str, files: dict[str, bytes | None]) -> None:
    """Write (bytes) or delete (None) files through the mounts of ``key``."""
    async with mounted(await sn.mounts(key)) as root:
        for name, data in files.items():
            path = root / name
            if data is None:
                if path.is_dir() and not path.is_symlink():
                    for child in sorted(path.rglob("*"), reverse=True):
                        child.rmdir() if child.is_dir() else child.unlink()
                    path.rmdir()
                else:
                    path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)


async def _layer(sn: Snapshotter, name: str, parent: str, files: dict[str, bytes | None]) -> None:
    key = f"{name}-active"
    await sn.prepare(key, parent)
    await _write(sn, key, files)
    await sn.commit(name, key)


def _tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = "-> " + os.readlink(path)
        elif path.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = path.read_bytes()
    return out


async def _walk(sn: Snapshotter, *filters: str) -> list[Info]:
    return [info async for info in sn.walk(*filters)]


async def put_blob(store: Store, data: bytes, ref: str = "test-blob") -> str:
    """Write ``data`` to ``store`` as a committed blob; return its digest."""
    writer = await store.writer(ref)
    await writer.write(data)
    return await writer.commit(len(data))


def make_tar(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    """An uncompressed PAX tar of ``entries`` (from :func:`tar_entry`)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def tar_entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes | None = None,
    *,
    linkname: str = "",
    mode: int = 0o644,
) -> tuple[tarfile.TarInfo, bytes | None]:
    """One tar entry (a regular file unless ``kind`` says otherwise), mtime fixed."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    info.mtime = 1_600_000_000
    if kind == tarfile.REGTYPE and data is None:
        data = b""
    return info, data


class SnapshotterSuite:
    """Contract tests; subclasses provide the ``snapshotter`` fixture."""

    @pytest.fixture
    def snapshotter(self) -> Snapshotter:
        """The snapshotter under test, on a fresh root (override)."""
        raise NotImplementedError

    @pytest.fixture(autouse=True)
    def _needs_root(self) -> None:
        if os.geteuid() != 0:
            pytest.skip("the snapshotter suite mounts filesystems and needs root")

    # --- basic life cycle -----------------------------------------------------------

    async def test_prepare_commit_view_shows_files(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        mounts = await sn.prepare("base-active", labels={"l": "v"})
        assert mounts == await sn.mounts("base-active")
        await _write(sn, "base-active", {"a": b"hello", "dir/b": b"world"})
        await sn.commit("base", "base-active")
        with pytest.raises(errdefs.NotFoundError):
            await sn.stat("base-active")
        info = await sn.stat("base")
        assert (info.kind, info.name, info.parent) == (Kind.COMMITTED, "base", "")
        await sn.view("base-view", "base")
        async with mounted(await sn.mounts("base-view")) as root:
            assert _tree(root) == {"a": b"hello", "dir": "dir", "dir/b": b"world"}

    async def test_stat_of_active_and_view(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {"x": b"1"})
        await sn.prepare("act", "p", labels={"k": "v"})
        await sn.view("vw", "p")
        act = await sn.stat("act")
        assert (act.kind, act.name, act.parent, dict(act.labels)) == (
            Kind.ACTIVE,
            "act",
            "p",
            {"k": "v"},
        )
        assert act.created_at.year >= 2020
        assert act.updated_at >= act.created_at
        vw = await sn.stat("vw")
        assert (vw.kind, vw.parent) == (Kind.VIEW, "p")

    async def test_view_is_read_only(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {"x": b"1"})
        await sn.view("vw", "p")
        async with mounted(await sn.mounts("vw")) as root:
            with pytest.raises(OSError) as excinfo:
                (root / "new").write_bytes(b"no")
            assert excinfo.value.errno == errno.EROFS

    async def test_view_without_parent_is_empty(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await sn.view("empty", "")
        async with mounted(await sn.mounts("empty")) as root:
            assert _tree(root) == {}

    async def test_chain_with_deletes_and_overwrites(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "l1", "", {"keep": b"1", "gone": b"1", "d/inner": b"1", "over": b"1"})
        await _layer(sn, "l2", "l1", {"gone": None, "d": None, "over": b"2", "new": b"2"})
        await _layer(sn, "l3", "l2", {"d/again": b"3"})
        await sn.view("top", "l3")
        async with mounted(await sn.mounts("top")) as root:
            assert _tree(root) == {
                "d": "dir",
                "d/again": b"3",
                "keep": b"1",
                "new": b"2",
                "over": b"2",
            }
        await sn.view("mid", "l1")
        async with mounted(await sn.mounts("mid")) as root:
            assert _tree(root)["over"] == b"1"

    async def test_active_child_sees_parent_and_writes_privately(
        self, snapshotter: Snapshotter
    ) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {"shared": b"p"})
        await sn.prepare("c1", "p")
        await sn.prepare("c2", "p")
        await _write(sn, "c1", {"shared": b"c1", "only1": b"1"})
        async with mounted(await sn.mounts("c2")) as root:
            assert _tree(root) == {"shared": b"p"}

    async def test_metadata_survives_layers(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await sn.prepare("a", "")
        async with mounted(await sn.mounts("a")) as root:
            f = root / "suid"
            f.write_bytes(b"x")
            os.chown(f, 1234, 5678)
            os.chmod(f, 0o4755)
            os.utime(f, ns=(1_000_000_000, 2_000_000_000))
            os.link(f, root / "hard")
            os.symlink("suid", root / "link")
            os.mkfifo(root / "fifo")
            (root / "private").mkdir(mode=0o700)
            os.chmod(root / "private", 0o700)
        await sn.commit("c", "a")
        await sn.prepare("b", "c")
        async with mounted(await sn.mounts("b")) as root:
            st = os.lstat(root / "suid")
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4755)
            assert st.st_mtime_ns == 2_000_000_000
            assert os.lstat(root / "hard").st_ino == st.st_ino
            assert os.readlink(root / "link") == "suid"
            assert stat.S_ISFIFO(os.lstat(root / "fifo").st_mode)
            assert stat.S_IMODE(os.lstat(root / "private").st_mode) == 0o700

    # --- errors -------------------------------------------------------------------------

    async def test_remove_parent_with_children_fails(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {"x": b"1"})
        await sn.prepare("child", "p")
        with pytest.raises(errdefs.FailedPreconditionError):
            await sn.remove("p")
        await sn.remove("child")
        await sn.remove("p")
        with pytest.raises(errdefs.NotFoundError):
            await sn.stat("p")

    async def test_commit_of_view_fails(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {"x": b"1"})
        await sn.view("vw", "p")
        with pytest.raises(errdefs.FailedPreconditionError):
            await sn.commit("from-view", "vw")
        assert (await sn.stat("vw")).kind is Kind.VIEW
        with pytest.raises(errdefs.NotFoundError):
            await sn.stat("from-view")

    async def test_commit_of_committed_fails(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {})
        with pytest.raises(errdefs.FailedPreconditionError):
            await sn.commit("again", "p")

    async def test_duplicate_keys_fail(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {})
        await sn.prepare("a", "")
        with pytest.raises(errdefs.AlreadyExistsError):
            await sn.prepare("a", "")
        with pytest.raises(errdefs.AlreadyExistsError):
            await sn.view("p", "")
        with pytest.raises(errdefs.AlreadyExistsError):
            await sn.commit("p", "a")
        assert (await sn.stat("a")).kind is Kind.ACTIVE

    async def test_missing_keys_fail(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        with pytest.raises(errdefs.NotFoundError):
            await sn.stat("nope")
        with pytest.raises(errdefs.NotFoundError):
            await sn.mounts("nope")
        with pytest.raises(errdefs.NotFoundError):
            await sn.remove("nope")
        with pytest.raises(errdefs.NotFoundError):
            await sn.commit("name", "nope")
        with pytest.raises(errdefs.NotFoundError):
            await sn.usage("nope")
        with pytest.raises(errdefs.NotFoundError):
            await sn.update(Info(kind=Kind.ACTIVE, name="nope", labels={"a": "b"}))
        with pytest.raises(errdefs.NotFoundError):
            await sn.prepare("orphan", "missing-parent")
        with pytest.raises(errdefs.NotFoundError):
            await sn.stat("orphan")

    async def test_parent_must_be_committed(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await sn.prepare("active-parent", "")
        with pytest.raises(errdefs.InvalidArgumentError):
            await sn.prepare("child", "active-parent")

    async def test_mounts_of_committed_fails(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {})
        with pytest.raises(errdefs.FailedPreconditionError):
            await sn.mounts("p")

    async def test_remove_active_and_view(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "p", "", {"x": b"1"})
        await sn.prepare("a", "p")
        await sn.view("v", "p")
        await sn.remove("a")
        await sn.remove("v")
        assert [i.name for i in await _walk(sn)] == ["p"]
        await sn.prepare("a", "p")  # the key is free again

    # --- labels, usage, walk -----------------------------------------------------------

    async def test_update_labels(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await sn.prepare("a", "", labels={"keep": "1", "drop": "1"})
        before = await sn.stat("a")
        info = await sn.update(
            Info(kind=Kind.ACTIVE, name="a", labels={"new": "2"}), "labels.new", "labels.drop"
        )
        assert dict(info.labels) == {"keep": "1", "new": "2"}
        assert info.updated_at >= before.updated_at
        assert info.created_at == before.created_at
        info = await sn.update(Info(kind=Kind.ACTIVE, name="a", labels={"only": "x"}))
        assert dict(info.labels) == {"only": "x"}
        info = await sn.update(Info(kind=Kind.ACTIVE, name="a", labels={"z": "1"}), "labels")
        assert dict((await sn.stat("a")).labels) == {"z": "1"}
        with pytest.raises(errdefs.InvalidArgumentError):
            await sn.update(Info(kind=Kind.ACTIVE, name="a", parent="x"), "parent")
        with pytest.raises(errdefs.InvalidArgumentError):
            await sn.prepare("bad-label", "", labels={"big": "x" * 5000})

    async def test_commit_labels_replace(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await sn.prepare("a", "", labels={"from": "prepare"})
        await sn.commit("c", "a", labels={"from": "commit"})
        assert dict((await sn.stat("c")).labels) == {"from": "commit"}

    async def test_usage(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await sn.prepare("a", "")
        empty = await sn.usage("a")
        await _write(sn, "a", {"big": os.urandom(1 << 20), "d/small": b"x"})
        used = await sn.usage("a")
        assert used.size >= empty.size + (1 << 20)
        assert used.inodes >= empty.inodes + 3
        await sn.commit("c", "a")
        committed = await sn.usage("c")
        assert committed.size >= 1 << 20

    async def test_walk_with_filters(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        await _layer(sn, "base", "", {})
        await sn.prepare("work", "base", labels={"team": "a"})
        await sn.view("look", "base", labels={"team": "b", "x.y": "1"})
        names = sorted(i.name for i in await _walk(sn))
        assert names == ["base", "look", "work"]
        assert [i.name for i in await _walk(sn, "kind==committed")] == ["base"]
        assert [i.name for i in await _walk(sn, "kind==active")] == ["work"]
        assert [i.name for i in await _walk(sn, "labels.team==b")] == ["look"]
        assert [i.name for i in await _walk(sn, 'labels."x.y"')] == ["look"]
        assert sorted(i.name for i in await _walk(sn, "parent==base")) == ["look", "work"]
        assert sorted(i.name for i in await _walk(sn, "name==base", "name==work")) == [
            "base",
            "work",
        ]
        assert [i.name for i in await _walk(sn, "parent==base,labels.team==a")] == ["work"]
        with pytest.raises(errdefs.InvalidArgumentError):
            await _walk(sn, "name==")

    async def test_cleanup_keeps_live_snapshots(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        if not isinstance(sn, Cleaner):
            pytest.skip("snapshotter does not implement cleanup")
        await _layer(sn, "p", "", {"x": b"1"})
        await sn.prepare("gone", "p")
        await sn.remove("gone")
        await sn.cleanup()
        await sn.view("v", "p")
        async with mounted(await sn.mounts("v")) as root:
            assert _tree(root) == {"x": b"1"}

    async def test_128_layer_chain(self, snapshotter: Snapshotter) -> None:
        sn = snapshotter
        parent = ""
        for i in range(128):
            name = f"layer-{i:03d}-with-a-rather-long-name-to-stress-bookkeeping"
            files: dict[str, bytes | None] = {"last": str(i).encode()}
            if i % 16 == 0:
                files[f"f{i}"] = str(i).encode()
            await _layer(sn, name, parent, files)
            parent = name
        await sn.prepare("top", parent)
        async with mounted(await sn.mounts("top")) as root:
            tree = _tree(root)
            assert tree["last"] == b"127"
            assert all(tree[f"f{i}"] == str(i).encode() for i in range(0, 128, 16))
            (root / "written-on-top").write_bytes(b"ok")
