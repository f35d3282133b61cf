"""The Go ``ctr images pull`` from a real registry into our daemon, then the images and
snapshots commands on what it unpacked.

A ``docker-registry`` on 127.0.0.1 is seeded with a three-layer image built here
(gzip layers with files, a symlink, a hard link, a whiteout and an opaque directory in
upper layers), once as OCI and once as Docker schema 2. The Go ``ctr`` fetches into our
content store and unpacks through our Diff and Snapshots services; the committed chain
must carry the chain IDs computed here, and the mounted image must show the merged tree.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.core.testing import STORE_PLUGINS
from pycontainerd.snapshots.mount import unmount
from pycontainerd.snapshots.testing import applier_pids

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycontainerd.daemon.testing import Daemon
    from pycontainerd.remotes.testing import Blob, Registry

MODULES = STORE_PLUGINS
REGISTRY_BIN = "/usr/bin/docker-registry"
CTR = "/usr/bin/ctr"
MTIME = 1_600_000_000
MNT_DETACH = 2

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("needs_root")]


# -- building the image ---------------------------------------------------------------


def _entry(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    *,
    link: str = "",
    mode: int = 0o644,
    owner: int = 0,
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.mtime = MTIME
    info.uid = info.gid = owner
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def _dir(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes | None]:
    return _entry(name, tarfile.DIRTYPE, mode=mode)


def _tar(*entries: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


LAYERS: tuple[bytes, ...] = (
    _tar(
        _dir("bin"),
        _entry("bin/tool", data=b"#!/bin/sh\necho v1\n", mode=0o755),
        _dir("etc"),
        _entry("etc/hello.txt", data=b"hello\n"),
        _entry("etc/hard", tarfile.LNKTYPE, link="etc/hello.txt"),
        _entry("etc/link", tarfile.SYMTYPE, link="hello.txt", mode=0o777),
        _entry("etc/abs", tarfile.SYMTYPE, link="/etc/hello.txt", mode=0o777),
        _entry("etc/gone.txt", data=b"deleted in layer 2\n"),
        _dir("data"),
        _dir("data/old"),
        _entry("data/old/a.txt", data=b"hidden by the opaque dir\n"),
        _dir("home", mode=0o750),
        _entry("home/owned.txt", data=b"user file\n", mode=0o600, owner=1000),
    ),
    _tar(
        _dir("etc"),
        _entry("etc/.wh.gone.txt"),
        _entry("etc/new.txt", data=b"added in layer 2\n"),
        _dir("data/old"),
        _entry("data/old/.wh..wh..opq"),
        _entry("data/old/b.txt", data=b"after the opaque marker\n"),
        _entry("bin/tool", data=b"#!/bin/sh\necho v2\n", mode=0o755),
    ),
    _tar(
        _dir("deep"),
        _dir("deep/a"),
        _dir("deep/a/b"),
        _entry("deep/a/b/c.txt", data=b"deep\n" * 1000),
        _entry("etc/hard2", tarfile.LNKTYPE, link="etc/new.txt"),
    ),
)

EXPECTED_FILES = {
    "bin/tool": b"#!/bin/sh\necho v2\n",
    "etc/hello.txt": b"hello\n",
    "etc/hard": b"hello\n",
    "etc/new.txt": b"added in layer 2\n",
    "etc/hard2": b"added in layer 2\n",
    "data/old/b.txt": b"after the opaque marker\n",
    "home/owned.txt": b"user file\n",
    "deep/a/b/c.txt": b"deep\n" * 1000,
}


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The identity of each layer stack: the first diff ID, then sha256 of ``"<prev> <next>"``."""
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(_sha256(f"{out[-1]} {diff_id}".encode()) if out else diff_id)
    return out


@dataclass
class Seeded:
    """An image pushed to the registry."""

    ref: str
    diff_ids: list[str]

    @property
    def chain(self) -> list[str]:
        return chain_ids(self.diff_ids)


def push_image_with_diff_ids(
    registry: Registry, repo: str, layers: list[bytes], diff_ids: list[str]
) -> Seeded:
    """Push ``layers`` with a config listing ``diff_ids`` then made-up ones for the rest."""
    made_up = [_sha256(b"not the layer %d" % i) for i in range(len(diff_ids), len(layers))]
    return push_image(registry, repo, layers, docker=False, diff_ids=[*diff_ids, *made_up])


def push_image(
    registry: Registry,
    repo: str,
    layers: list[bytes],
    *,
    docker: bool,
    diff_ids: list[str] | None = None,
) -> Seeded:
    """Push ``layers`` (uncompressed tars, gzipped here) as ``repo:latest``."""
    mt = pytest.importorskip("pycontainerd.remotes.mediatypes")
    rt = pytest.importorskip("pycontainerd.remotes.testing")
    layer_type = mt.DOCKER_LAYER_GZIP if docker else mt.OCI_LAYER_GZIP
    blobs: list[Blob] = [rt.Blob(layer_type, gzip.compress(tar, mtime=0)) for tar in layers]
    if diff_ids is None:
        diff_ids = [_sha256(tar) for tar in layers]
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/tool"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_blob = rt.Blob(
        mt.DOCKER_CONFIG if docker else mt.OCI_CONFIG, json.dumps(config).encode()
    )
    manifest_type = mt.DOCKER_MANIFEST if docker else mt.OCI_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config_blob.descriptor(),
        "layers": [b.descriptor() for b in blobs],
    }
    image = rt.Image(
        root=rt.Blob(manifest_type, json.dumps(manifest).encode()), blobs=[*blobs, config_blob]
    )
    return Seeded(registry.seed(repo, "latest", image), diff_ids)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    daemon_testing = pytest.importorskip("pycontainerd.daemon.testing")
    daemon_testing.require_binary(REGISTRY_BIN)
    rt = pytest.importorskip("pycontainerd.remotes.testing")
    base = Path(tempfile.mkdtemp(prefix="pull-e2e-reg-"))
    try:
        with rt.Registry(base).running() as reg:
            yield reg
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def oci_image(registry: Registry) -> Seeded:
    return push_image(registry, "e2e/oci", list(LAYERS), docker=False)


@pytest.fixture(scope="module")
def docker_image(registry: Registry) -> Seeded:
    return push_image(registry, "e2e/docker", list(LAYERS), docker=True)


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    testing = pytest.importorskip("pycontainerd.daemon.testing")
    testing.require_binary(CTR)
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="pull-e2e-"))
    d = testing.Daemon(base, env=testing.daemon_env(MODULES))
    try:
        d.start()
        yield d
    finally:
        d.kill()
        print(d.log()[-20000:])  # shown by pytest when the test fails
        for line in Path("/proc/self/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(str(base)):
                unmount(target, MNT_DETACH)
        shutil.rmtree(base, ignore_errors=True)


# -- helpers --------------------------------------------------------------------------


def ctr_bytes(daemon: Daemon, *args: str) -> bytes:
    """Run the Go ``ctr`` and return its raw stdout (AssertionError on failure)."""
    res = subprocess.run(
        [CTR, "-a", daemon.address, *args], capture_output=True, timeout=60, check=False
    )
    assert res.returncode == 0, f"ctr {args} failed: {res.stderr.decode(errors='replace')}"
    return res.stdout


def pull(daemon: Daemon, ref: str, *extra: str) -> None:
    res = daemon.ctr("images", "pull", "--plain-http", *extra, ref, check=False)
    assert res.returncode == 0, f"pull failed: {res.stderr}\n{daemon.log()[-3000:]}"
    assert "unpacking linux/amd64" in res.stdout


def snapshot_rows(daemon: Daemon, snapshotter: str = "overlayfs") -> dict[str, tuple[str, str]]:
    """``ctr snapshots ls`` as ``{key: (parent, kind)}``."""
    out = daemon.ctr("snapshots", "--snapshotter", snapshotter, "ls").stdout.splitlines()
    assert out[0].split() == ["KEY", "PARENT", "KIND"]
    rows = {}
    for line in out[1:]:
        cols = line.split()
        key, kind = cols[0], cols[-1]
        rows[key] = (cols[1] if len(cols) == 3 else "", kind)
    return rows


def tree(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root``: kind, mode, owner, contents or link target; hard links
    as the sorted names sharing an inode."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            st = path.lstat()
            common = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", *common)
            else:
                out[rel] = ("file", *common, path.read_bytes(), int(st.st_mtime))
                inodes.setdefault(st.st_ino, []).append(rel)
    for names in inodes.values():
        if len(names) > 1:
            for name in names:
                out[name] = (*out[name], tuple(sorted(names)))
    return out


def check_image_tree(root: Path) -> None:
    """The merged tree of the three layers."""
    files = {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink()
    }
    assert files == EXPECTED_FILES
    assert not (root / "etc/gone.txt").exists()
    assert not (root / "etc/.wh.gone.txt").exists()
    assert sorted(os.listdir(root / "data/old")) == ["b.txt"]
    assert os.readlink(root / "etc/link") == "hello.txt"
    assert os.readlink(root / "etc/abs") == "/etc/hello.txt"
    assert (root / "etc/hard").stat().st_ino == (root / "etc/hello.txt").stat().st_ino
    assert (root / "etc/hard2").stat().st_ino == (root / "etc/new.txt").stat().st_ino
    owned = (root / "home/owned.txt").stat()
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1000, 1000, 0o600)
    assert stat.S_IMODE((root / "home").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "bin/tool").stat().st_mode) == 0o755
    assert int((root / "etc/hello.txt").stat().st_mtime) == MTIME


@pytest.fixture
def mount_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="pull-mnt-"))
    try:
        yield path
    finally:
        if os.path.ismount(path):
            unmount(path, MNT_DETACH)
        shutil.rmtree(path, ignore_errors=True)


# -- tests ----------------------------------------------------------------------------


def test_pull_unpacks_chain_and_mounts(daemon: Daemon, oci_image: Seeded, mount_dir: Path) -> None:
    pull(daemon, oci_image.ref)
    chain = oci_image.chain
    rows = snapshot_rows(daemon)
    assert rows == {
        chain[0]: ("", "Committed"),
        chain[1]: (chain[0], "Committed"),
        chain[2]: (chain[1], "Committed"),
    }
    info = json.loads(daemon.ctr("snapshots", "info", chain[2]).stdout)
    assert info["Parent"] == chain[1]
    assert info["Kind"] == "Committed"
    # the unpack labels each layer blob with its diff ID and the config with the top snapshot
    content = daemon.ctr("content", "ls").stdout
    for diff_id in oci_image.diff_ids:
        assert f"containerd.io/uncompressed={diff_id}" in content
    assert f"containerd.io/gc.ref.snapshot.overlayfs={chain[2]}" in content
    tree_out = daemon.ctr("snapshots", "tree").stdout
    assert tree_out.index(chain[0]) < tree_out.index(chain[1]) < tree_out.index(chain[2])
    usage = daemon.ctr("snapshots", "usage", chain[2]).stdout
    assert chain[2] in usage
    # an active snapshot on the chain: an overlay over all three layers
    daemon.ctr("snapshots", "prepare", "work", chain[2])
    mounts = daemon.ctr("snapshots", "mounts", "/mnt", "work").stdout
    assert mounts.startswith("mount -t overlay overlay ")
    lower = re.search(r"lowerdir=([^,\s]+)", mounts)
    assert lower is not None
    assert len(lower.group(1).split(":")) == 3
    assert daemon.ctr("snapshots", "rm", chain[2], check=False).returncode != 0
    daemon.ctr("snapshots", "rm", "work")

    images = daemon.ctr("images", "ls").stdout.splitlines()
    assert len(images) == 2
    assert images[1].split()[0] == oci_image.ref
    assert "application/vnd.oci.image.manifest.v1+json" in images[1]
    assert "linux/amd64" in images[1]
    check = daemon.ctr("images", "check").stdout
    assert "complete" in check

    daemon.ctr("images", "mount", oci_image.ref, str(mount_dir))
    try:
        assert os.path.ismount(mount_dir)
        check_image_tree(mount_dir)
        # read-only view: writing fails
        with pytest.raises(OSError, match="Read-only"):
            (mount_dir / "new").write_bytes(b"x")
        assert str(mount_dir) in snapshot_rows(daemon)
    finally:
        daemon.ctr("images", "unmount", str(mount_dir))
    assert not os.path.ismount(mount_dir)
    assert snapshot_rows(daemon)[str(mount_dir)] == (chain[2], "View")  # kept without --rm
    daemon.ctr("images", "mount", oci_image.ref, str(mount_dir))
    daemon.ctr("images", "unmount", "--rm", str(mount_dir))
    assert not os.path.ismount(mount_dir)
    assert str(mount_dir) not in snapshot_rows(daemon)

    # a second pull of the same image finds everything in place
    pull(daemon, oci_image.ref)
    assert snapshot_rows(daemon) == rows

    daemon.ctr("images", "rm", "--sync", oci_image.ref)
    assert daemon.ctr("images", "ls", "-q").stdout.strip() == ""
    # the synchronous collection took the layers and the chain with the image
    assert snapshot_rows(daemon) == {}
    assert daemon.ctr("content", "ls", "-q").stdout.strip() == ""


def test_pull_docker_schema2_with_native(
    daemon: Daemon, docker_image: Seeded, mount_dir: Path
) -> None:
    pull(daemon, docker_image.ref, "--snapshotter", "native")
    chain = docker_image.chain
    assert snapshot_rows(daemon, "native") == {
        chain[0]: ("", "Committed"),
        chain[1]: (chain[0], "Committed"),
        chain[2]: (chain[1], "Committed"),
    }
    assert snapshot_rows(daemon, "overlayfs") == {}
    listing = daemon.ctr("images", "ls").stdout
    assert "application/vnd.docker.distribution.manifest.v2+json" in listing
    daemon.ctr("images", "mount", "--snapshotter", "native", docker_image.ref, str(mount_dir))
    try:
        check_image_tree(mount_dir)
    finally:
        daemon.ctr("images", "unmount", "--snapshotter", "native", "--rm", str(mount_dir))
    assert not os.path.ismount(mount_dir)


def test_snapshots_diff_applies_back(
    daemon: Daemon, registry: Registry, oci_image: Seeded, mount_dir: Path
) -> None:
    pull(daemon, oci_image.ref)
    daemon.ctr("images", "mount", "--rw", oci_image.ref, str(mount_dir))
    try:
        (mount_dir / "etc/hello.txt").unlink()  # the hard link etc/hard stays
        (mount_dir / "bin/tool").write_bytes(b"#!/bin/sh\necho v3\n")
        shutil.copytree(mount_dir / "data/old", mount_dir / "data/moved", symlinks=True)
        shutil.rmtree(mount_dir / "data/old")
        (mount_dir / "deep/a").chmod(0o700)
        (mount_dir / "fresh").mkdir()
        (mount_dir / "fresh/one").write_bytes(b"one\n")
        os.link(mount_dir / "fresh/one", mount_dir / "fresh/two")
        os.symlink("../etc/new.txt", mount_dir / "fresh/sym")
        os.chown(mount_dir / "fresh/one", 123, 456)
        for path in (mount_dir / "fresh/one", mount_dir / "bin/tool"):
            os.utime(path, (MTIME + 5, MTIME + 5))
        expected = tree(mount_dir)
        layer = ctr_bytes(daemon, "snapshots", "diff", str(mount_dir))
    finally:
        daemon.ctr("images", "unmount", "--rm", str(mount_dir))
    assert str(mount_dir) not in snapshot_rows(daemon)

    raw = gzip.decompress(layer)
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        names = set(tar.getnames())
    assert "etc/.wh.hello.txt" in names
    assert "data/.wh.old" in names
    assert {"fresh/one", "fresh/two", "fresh/sym", "bin/tool", "data/moved/b.txt"} <= names

    # the layer on top of the image's layers, pulled again, rebuilds the same tree
    again = push_image(registry, "e2e/again", [*LAYERS, raw], docker=False)
    pull(daemon, again.ref)
    assert set(again.chain) <= set(snapshot_rows(daemon))
    daemon.ctr("images", "mount", again.ref, str(mount_dir))
    try:
        assert tree(mount_dir) == expected
    finally:
        daemon.ctr("images", "unmount", str(mount_dir))


def test_pull_with_wrong_diff_id_fails_cleanly(daemon: Daemon, registry: Registry) -> None:
    bad = push_image(registry, "e2e/bad", [LAYERS[0], LAYERS[1]], docker=False)
    # rewrite the config: the second diff ID does not match the layer's contents
    wrong = push_image_with_diff_ids(registry, "e2e/bad", [LAYERS[0], LAYERS[1]], bad.diff_ids[:1])
    res = daemon.ctr("images", "pull", "--plain-http", wrong.ref, check=False)
    assert res.returncode != 0
    assert "wrong diff id" in res.stderr
    # the first layer is committed (unless the garbage collector already took it, as nothing
    # refers to it any more); nothing is left half-extracted
    assert snapshot_rows(daemon).items() <= {bad.chain[0]: ("", "Committed")}.items()


@pytest.mark.slow
def test_pull_and_mount_128_layers(daemon: Daemon, registry: Registry, mount_dir: Path) -> None:
    # More writes than the collector's mutation threshold: a collection runs during
    # the pull and must keep what the pull's lease holds. The mounted overlay has
    # 128 lowerdirs, more than fit in one page of mount options without shortening.
    layers = [
        _tar(
            _dir(f"l{i:03d}"),
            _entry(f"l{i:03d}/file", data=b"layer %d\n" % i),
            _entry("top", data=b"%d\n" % i),
        )
        for i in range(128)
    ]
    image = push_image(registry, "e2e/deep", layers, docker=False)
    pull(daemon, image.ref)
    rows = snapshot_rows(daemon)
    assert rows[image.chain[-1]] == (image.chain[-2], "Committed")
    assert len(rows) == 128
    daemon.ctr("images", "mount", image.ref, str(mount_dir))
    try:
        assert (mount_dir / "l000/file").read_bytes() == b"layer 0\n"
        assert (mount_dir / "l127/file").read_bytes() == b"layer 127\n"
        assert (mount_dir / "top").read_bytes() == b"127\n"
        assert len(list(mount_dir.iterdir())) == 129
    finally:
        daemon.ctr("images", "unmount", "--rm", str(mount_dir))


def _queued_bytes(pid: int) -> int:
    """Bytes waiting in the receive queues of ``pid``'s unix sockets (``ss``)."""
    out = subprocess.run(
        ["ss", "-x", "-p", "-H"], capture_output=True, text=True, check=True
    ).stdout
    return sum(int(line.split()[2]) for line in out.splitlines() if f"pid={pid}," in line)


def test_pull_fails_cleanly_when_the_applier_dies(daemon: Daemon, oci_image: Seeded) -> None:
    testing = pytest.importorskip("pycontainerd.daemon.testing")
    assert daemon.proc is not None
    (worker,) = applier_pids(daemon.proc.pid)
    os.kill(worker, signal.SIGSTOP)  # a layer's request waits in its socket: in flight
    puller = subprocess.Popen(
        [CTR, "-a", daemon.address, "images", "pull", "--plain-http", oci_image.ref],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        testing.wait_for(lambda: _queued_bytes(worker) > 0, what="an apply sent to the applier")
        os.kill(worker, signal.SIGKILL)
        _out, err = puller.communicate(timeout=60)
    finally:
        if puller.poll() is None:
            puller.kill()
            puller.wait()
    assert puller.returncode != 0
    assert f"layer applier process {worker} was killed by SIGKILL" in err
    assert oci_image.chain[0] not in snapshot_rows(daemon)  # nothing committed
    (fresh,) = applier_pids(daemon.proc.pid)
    assert fresh != worker
    pull(daemon, oci_image.ref)
    rows = snapshot_rows(daemon)
    assert all(rows[chain][1] == "Committed" for chain in oci_image.chain)
