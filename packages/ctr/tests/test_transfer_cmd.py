"""``ctr images pull/push/import/export/tag`` without ``--local``: the daemon's Transfer service."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.remotes.testing import Registry, build_image, require_registry
from pycontainerd.remotes.unpack import chain_ids

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from pycontainerd.daemon.testing import Daemon

    Ctr = Callable[..., subprocess.CompletedProcess[bytes]]
    Pull = Callable[..., str]

IMAGE = build_image([{"bin/hello": b"#!/bin/sh\necho hello\n"}, {"etc/motd": b"welcome\n"}])
REGISTRY_IMAGES = {"test/app:v1": IMAGE}


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    require_registry()
    reg = Registry(tmp_path_factory.mktemp("basic"), htpasswd={"alice": "s3cret"})
    with reg.running():
        reg.seed("test/private", "v1", IMAGE, user=("alice", "s3cret"))
        yield reg


def ok(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def test_pull_through_transfer(
    registry: Registry, ours: Daemon, ns: str, py: Ctr, pull: Pull
) -> None:
    ref = f"{registry.host}/test/app:v1"
    out = pull(ours.address, ref, ns)
    # the tree as containerd 2.x's ctr draws it: blobs under the image, then the status
    assert f"{ref}" in out
    assert "└──" in out
    assert f"layer ({IMAGE.blobs[0].digest[7:19]})" in out
    assert f"Completed pull from OCI Registry ({ref})" in out.splitlines()[-1]
    assert ok(py(ours.address, "images", "ls", "-q", namespace=ns)).split() == [ref]
    snaps = ok(py(ours.address, "snapshots", "--snapshotter", "native", "ls", namespace=ns))
    assert chain_ids(IMAGE.diff_ids)[-1] in snaps
    assert ok(py(ours.address, "leases", "ls", "-q", namespace=ns)) == ""


def test_client_only_flags_need_local(registry: Registry, ours: Daemon, ns: str, py: Ctr) -> None:
    ref = f"{registry.host}/test/app:v1"
    res = py(ours.address, "images", "pull", "--print-chainid", ref, namespace=ns)
    assert res.returncode == 1
    assert '"--print-chainid" requires "--local" flag' in res.stderr.decode()
    res = py(ours.address, "images", "push", "--manifest", "sha256:x", ref, namespace=ns)
    assert '"--manifest" requires "--local" flag' in res.stderr.decode()


def test_push_tag_and_pull_back(
    registry: Registry, ours: Daemon, ns: str, py: Ctr, pull: Pull
) -> None:
    ref = f"{registry.host}/test/app:v1"
    pull(ours.address, ref, ns)
    tagged = f"{registry.host}/tagged/app:v2"
    assert ok(py(ours.address, "images", "tag", ref, tagged, namespace=ns)) == f"{tagged}\n"
    out = ok(py(ours.address, "images", "push", "--plain-http", tagged, namespace=ns))
    assert f"Completed push to OCI Registry ({tagged})" in out
    other = ns + "b"
    pull(ours.address, tagged, other)
    listed = ok(py(ours.address, "images", "ls", namespace=other))
    assert IMAGE.root.digest in listed


def test_export_import_round_trip(
    registry: Registry, ours: Daemon, ns: str, py: Ctr, tmp_path: Path, *, pull: Pull
) -> None:
    ref = f"{registry.host}/test/app:v1"
    pull(ours.address, ref, ns)
    served, local = tmp_path / "served.tar", tmp_path / "local.tar"
    ok(py(ours.address, "images", "export", str(served), ref, namespace=ns))
    ok(py(ours.address, "images", "export", "--local", str(local), ref, namespace=ns))
    assert served.read_bytes() == local.read_bytes()

    other = ns + "i"
    out = ok(
        py(
            ours.address,
            "images",
            "import",
            "--snapshotter",
            "native",
            str(served),
            namespace=other,
        )
    )
    assert "Completed import" in out
    assert ok(py(ours.address, "images", "ls", "-q", namespace=other)).split() == [ref]
    snaps = ok(py(ours.address, "snapshots", "--snapshotter", "native", "ls", namespace=other))
    assert chain_ids(IMAGE.diff_ids)[-1] in snaps


def test_export_of_missing_image(ours: Daemon, ns: str, py: Ctr, tmp_path: Path) -> None:
    out = tmp_path / "x.tar"
    res = py(ours.address, "images", "export", str(out), "example.test/none:v1", namespace=ns)
    assert res.returncode == 1
    assert "not found" in res.stderr.decode()
    assert not out.exists()


def test_user_credentials_go_through_the_callback(
    private: Registry, ours: Daemon, ns: str, py: Ctr, pull: Pull
) -> None:
    ref = f"{private.host}/test/private:v1"
    denied = py(ours.address, "images", "pull", "--plain-http", ref, namespace=ns)
    assert denied.returncode == 1
    assert "authorization" in denied.stderr.decode().lower()
    pull(ours.address, ref, ns, "-u", "alice:s3cret")
    assert ok(py(ours.address, "images", "ls", "-q", namespace=ns)).split() == [ref]
