"""``ctr images import/export/mount/unmount/usage``: ours and the Go ctr, on both daemons."""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import TYPE_CHECKING

import pytest

from pycontainerd.remotes.testing import build_image
from pycontainerd.remotes.unpack import chain_ids

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable
    from pathlib import Path

    from pycontainerd.client.testing import RealContainerd
    from pycontainerd.daemon.testing import Daemon

    Ctr = Callable[..., subprocess.CompletedProcess[bytes]]

IMAGE = build_image([{"bin/hello": b"#!/bin/sh\necho hi\n"}, {"etc/motd": b"welcome\n"}])
NAME = "example.com/t:v1"


@pytest.fixture(scope="session")
def py(py_local: Callable[..., subprocess.CompletedProcess[bytes]]) -> Callable[..., object]:
    """These tests drive the client-side paths: ``--local`` on image transfer commands."""
    return py_local


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def oci_archive(extra: dict[str, bytes] | None = None) -> bytes:
    """An OCI layout of IMAGE whose only entry has the ref name ``v1``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        entry = IMAGE.root.descriptor(annotations={"org.opencontainers.image.ref.name": "v1"})
        _add(tf, "index.json", json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode())
        for blob in [IMAGE.root, *IMAGE.blobs]:
            _add(tf, "blobs/sha256/" + blob.digest.split(":")[1], blob.data)
        for name, data in (extra or {}).items():
            _add(tf, name, data)
    return buf.getvalue()


@pytest.fixture(params=["containerd", "ours"])
def daemon(request: pytest.FixtureRequest) -> RealContainerd | Daemon:
    d: RealContainerd | Daemon = request.getfixturevalue(request.param)
    return d


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return "io-" + str(abs(hash(request.node.nodeid)) % 10**10)


def _ok(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def _import(py: Ctr, daemon: RealContainerd | Daemon, ns: str, tmp_path: Path, *extra: str) -> str:
    archive = tmp_path / "in.tar"
    archive.write_bytes(oci_archive())
    args = ("images", "import", "--base-name", "example.com/t", *extra, str(archive))
    return _ok(py(daemon.address, *args, namespace=ns))


def test_import_export_both_ways_with_go_ctr(
    daemon: RealContainerd | Daemon, ns: str, tmp_path: Path, go: Ctr, py: Ctr
) -> None:
    out = _import(py, daemon, ns, tmp_path)
    assert out == f"unpacking {NAME} ({IMAGE.root.digest})...done\n"
    listed = _ok(py(daemon.address, "images", "ls", "-q", namespace=ns))
    assert listed.split() == [NAME]

    ours_tar, go_tar = tmp_path / "ours.tar", tmp_path / "go.tar"
    _ok(py(daemon.address, "images", "export", str(ours_tar), NAME, namespace=ns))
    _ok(go(daemon.address, "images", "export", str(go_tar), NAME, namespace=ns))
    assert ours_tar.read_bytes() == go_tar.read_bytes()

    # Go's archive into ours, ours into Go's, each into a fresh namespace
    _ok(py(daemon.address, "images", "import", str(go_tar), namespace=ns + "a"))
    _ok(go(daemon.address, "images", "import", str(ours_tar), namespace=ns + "b"))
    for other in (ns + "a", ns + "b"):
        res = _ok(go(daemon.address, "images", "ls", namespace=other))
        assert NAME in res
        assert IMAGE.root.digest in res
        check = _ok(go(daemon.address, "images", "check", namespace=other))
        assert " complete (3/3) " in check

    # stdin and stdout with "-"
    piped = py(daemon.address, "images", "export", "-", NAME, namespace=ns)
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout == ours_tar.read_bytes()
    imported = py(
        daemon.address,
        "images",
        "import",
        "--no-unpack",
        "-",
        namespace=ns + "c",
        stdin=piped.stdout,
    )
    assert _ok(imported) == ""
    assert _ok(py(daemon.address, "images", "ls", "-q", namespace=ns + "c")).split() == [NAME]


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_mount_usage_unmount(
    daemon: RealContainerd | Daemon, ns: str, tmp_path: Path, py: Ctr, go: Ctr
) -> None:
    _import(py, daemon, ns, tmp_path)
    target = tmp_path / "mnt"
    target.mkdir()
    out = _ok(py(daemon.address, "images", "mount", NAME, str(target), namespace=ns)).splitlines()
    try:
        assert out[0].startswith("sha256:")
        assert out[1] == str(target)
        assert (target / "bin" / "hello").read_bytes() == b"#!/bin/sh\necho hi\n"
        assert (target / "etc" / "motd").read_text() == "welcome\n"
        leases = _ok(go(daemon.address, "leases", "ls", namespace=ns))
        assert f"containerd.io/gc.ref.snapshot.overlayfs={target}" in leases
        usage = _ok(py(daemon.address, "images", "usage", NAME, namespace=ns)).splitlines()
        assert usage[0].split() == ["KEY", "SIZE", "INODES"]
        assert usage[1].split()[0] == out[0]
        assert len(usage) == 3  # two layers
    finally:
        res = py(daemon.address, "images", "unmount", "--rm", str(target), namespace=ns)
    assert _ok(res) == f"{target}\n"
    assert list(target.iterdir()) == []
    snapshots = _ok(go(daemon.address, "snapshots", "ls", namespace=ns))
    assert str(target) not in snapshots
    assert str(target) not in _ok(go(daemon.address, "leases", "ls", namespace=ns))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("images", "export", "out.tar"), "please provide both an output filename"),
        (("images", "import"), "please provide an archive"),
        (
            ("images", "import", "--skip-digest-for-named", "x.tar"),
            "must be specified with --digests",
        ),
        (("images", "mount", "x"), "please provide a target path to mount to"),
        (("images", "unmount"), "please provide a target path to unmount from"),
        (("images", "usage"), "please provide an image reference"),
    ],
)
def test_usage_errors(ours: Daemon, args: tuple[str, ...], message: str, py: Ctr) -> None:
    res = py(ours.address, *args)
    assert res.returncode == 1
    assert message in res.stderr.decode()


def test_hostile_and_corrupt_archives_are_refused(
    ours: Daemon, ns: str, tmp_path: Path, py: Ctr
) -> None:
    evil = tmp_path / "evil.tar"
    evil.write_bytes(oci_archive({"../../outside": b"x"}))
    res = py(ours.address, "images", "import", str(evil), namespace=ns)
    assert res.returncode == 1
    assert "path escapes the archive" in res.stderr.decode()
    assert not (tmp_path.parent / "outside").exists()

    bad = tmp_path / "bad.tar"
    bad.write_bytes(oci_archive({"blobs/sha256/" + "1" * 64: b"not what the name says"}))
    res = py(ours.address, "images", "import", str(bad), namespace=ns)
    assert res.returncode == 1
    assert "digest mismatch" in res.stderr.decode()
    assert _ok(py(ours.address, "images", "ls", "-q", namespace=ns)) == ""
    assert _ok(py(ours.address, "content", "active", namespace=ns)).splitlines()[1:] == []

    res = py(ours.address, "images", "export", str(tmp_path / "x.tar"), "nope:1", namespace=ns)
    assert res.returncode == 1
    assert "not found" in res.stderr.decode()
    assert not (tmp_path / "x.tar").exists()
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []


def test_snapshots_unpack_and_diff(
    daemon: RealContainerd | Daemon, ns: str, tmp_path: Path, py: Ctr, go: Ctr
) -> None:
    assert _import(py, daemon, ns, tmp_path, "--no-unpack") == ""
    dgst = IMAGE.root.digest
    out = _ok(py(daemon.address, "snapshots", "unpack", dgst, namespace=ns))
    assert out == f"unpacking {dgst} (application/vnd.oci.image.manifest.v1+json)...done\n"
    top = chain_ids(IMAGE.diff_ids)[-1]
    assert top in _ok(go(daemon.address, "snapshots", "ls", namespace=ns))
    ours = py(daemon.address, "snapshots", "diff", top, namespace=ns)
    theirs = go(daemon.address, "snapshots", "diff", top, namespace=ns)
    for res in (ours, theirs):
        assert res.returncode == 0, res.stderr.decode()
        with tarfile.open(fileobj=io.BytesIO(res.stdout), mode="r:gz") as tf:
            names = tf.getnames()
            assert names == ["etc", "etc/motd"]
            assert tf.extractfile("etc/motd").read() == b"welcome\n"  # type: ignore[union-attr]
    res = py(daemon.address, "snapshots", "unpack", "sha256:" + "0" * 64, namespace=ns)
    assert res.returncode == 1
    assert "manifest not found" in res.stderr.decode()
    res = py(daemon.address, "snapshots", "diff", namespace=ns)
    assert res.returncode == 1
    assert "snapshot id must be provided" in res.stderr.decode()
