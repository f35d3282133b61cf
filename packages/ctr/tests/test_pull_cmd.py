"""Our ``ctr images pull/push`` and ``ctr content fetch*`` against a real docker-registry.

Pulls go into our daemon and into a real containerd; every test uses a
namespace of its own so tests sharing a daemon do not see each other.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pycontainerd.remotes.testing import (
    Registry,
    build_image,
    build_index,
    free_port,
    make_ca,
    require_registry,
)
from pycontainerd.remotes.unpack import chain_ids

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pycontainerd.client.testing import RealContainerd
    from pycontainerd.daemon.testing import Daemon

    Ctr = Callable[..., subprocess.CompletedProcess[bytes]]
    Pull = Callable[..., str]

IMAGE = build_image(
    [{"bin/hello": b"#!/bin/sh\necho hello\n"}, {"etc/motd": b"welcome\n"}, {"etc/x": b"x" * 5000}]
)
AMD = build_image([{"arch": b"amd64\n"}])
ARM = build_image([{"arch": b"arm64\n"}], architecture="arm64", variant="v8")
INDEX = build_index({"linux/amd64": AMD, "linux/arm64/v8": ARM})
USERS = {"alice": "s3cret"}
REGISTRY_IMAGES = {"test/multi:v1": IMAGE, "test/index:v1": INDEX}


@pytest.fixture(scope="session")
def py(py_local: Callable[..., subprocess.CompletedProcess[bytes]]) -> Callable[..., object]:
    """These tests drive the client-side paths: ``--local`` on image transfer commands."""
    return py_local


@pytest.fixture(params=["ours", "containerd"])
def address(request: pytest.FixtureRequest) -> str:
    daemon: RealContainerd | Daemon = request.getfixturevalue(request.param)
    return daemon.address


def ok(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def content_digests(py: Ctr, address: str, ns: str) -> set[str]:
    return set(ok(py(address, "content", "ls", "-q", namespace=ns)).split())


def test_pull_multi_layer_image(
    registry: Registry, address: str, ns: str, py: Ctr, pull: Pull
) -> None:
    ref = f"{registry.host}/test/multi:v1"
    out = pull(address, ref, ns, "--print-chainid")
    lines = out.splitlines()
    # stdout is a pipe: one final table without escape sequences, then the unpack lines
    assert "\x1b" not in out
    assert lines[0].startswith(f"{ref}:")
    assert "resolved" in lines[0]
    manifest_line = next(x for x in lines if x.startswith(f"manifest-{IMAGE.root.digest}:"))
    assert " done " in manifest_line
    assert "|" + "+" * 38 + "|" in manifest_line
    for blob in IMAGE.blobs:
        kind = "config" if "config" in blob.media_type else "layer"
        assert any(x.startswith(f"{kind}-{blob.digest}:") for x in lines)
    assert any(x.startswith("elapsed: ") and "total:" in x for x in lines)
    top = chain_ids(IMAGE.diff_ids)[-1]
    tail = lines[-3:]
    assert tail[0] == f"unpacking linux/amd64 {IMAGE.root.digest}..."
    assert tail[1] == f"image chain ID: {top}"
    assert tail[2].startswith("done: ")
    assert tail[2].endswith("\t")
    assert ok(py(address, "images", "ls", "-q", namespace=ns)).split() == [ref]
    snaps = ok(py(address, "snapshots", "--snapshotter", "native", "ls", namespace=ns))
    assert top in snaps
    assert {b.digest for b in IMAGE.blobs} | {IMAGE.root.digest} <= content_digests(py, address, ns)


def test_pull_platform_arm64(
    registry: Registry, address: str, ns: str, py: Ctr, pull: Pull
) -> None:
    ref = f"{registry.host}/test/index:v1"
    out = pull(address, ref, ns, "--platform", "linux/arm64", "--print-chainid")
    assert f"unpacking linux/arm64 {INDEX.root.digest}...\n" in out
    assert f"image chain ID: {chain_ids(ARM.diff_ids)[-1]}\n" in out
    have = content_digests(py, address, ns)
    assert ARM.blobs[0].digest in have
    assert AMD.blobs[0].digest not in have


def test_pull_all_platforms(registry: Registry, address: str, ns: str, py: Ctr, pull: Pull) -> None:
    ref = f"{registry.host}/test/index:v1"
    out = pull(address, ref, ns, "--all-platforms")
    assert f"unpacking linux/amd64 {INDEX.root.digest}...\n" in out
    assert f"unpacking linux/arm64/v8 {INDEX.root.digest}...\n" in out
    have = content_digests(py, address, ns)
    assert {ARM.blobs[0].digest, AMD.blobs[0].digest} <= have


def test_pull_all_metadata_and_fetch_metadata_only(
    registry: Registry, address: str, ns: str, py: Ctr, pull: Pull
) -> None:
    ref = f"{registry.host}/test/index:v1"
    pull(address, ref, ns, "--platform", "linux/arm64", "--all-metadata")
    have = content_digests(py, address, ns)
    assert {ARM.root.digest, ARM.blobs[-1].digest, ARM.blobs[0].digest} <= have
    assert {AMD.root.digest, AMD.blobs[-1].digest} <= have  # amd64's manifest and config
    assert AMD.blobs[0].digest not in have  # but not its layers

    meta_ns = f"{ns}-meta"
    ok(py(address, "content", "fetch", "--plain-http", "--metadata-only", ref, namespace=meta_ns))
    have = content_digests(py, address, meta_ns)
    assert {INDEX.root.digest, AMD.root.digest, ARM.root.digest} <= have
    assert {AMD.blobs[-1].digest, ARM.blobs[-1].digest} <= have  # configs
    assert not {AMD.blobs[0].digest, ARM.blobs[0].digest} & have  # no layers
    assert ok(py(address, "images", "ls", "-q", namespace=meta_ns)).split() == [ref]


def test_pull_unknown_tag_and_bad_platform(
    registry: Registry, ours: Daemon, ns: str, py: Ctr
) -> None:
    res = py(ours.address, "images", "pull", "--plain-http", f"{registry.host}/test/nope:v1")
    assert res.returncode == 1
    assert res.stderr.decode().startswith("ctr: ")
    assert "not found" in res.stderr.decode()
    res = py(ours.address, "images", "pull", "--platform", "linux/", f"{registry.host}/x:y")
    assert res.returncode == 1
    assert "invalid" in res.stderr.decode().lower()
    res = py(ours.address, "images", "pull", namespace=ns)
    assert res.returncode == 1
    assert (
        res.stderr.decode() == "ctr: please provide an image reference to pull: invalid argument\n"
    )


def test_pull_with_user_from_htpasswd_registry(
    tmp_path: Path, ours: Daemon, ns: str, py: Ctr, pull: Pull
) -> None:
    require_registry()
    with Registry(tmp_path / "reg", htpasswd=USERS).running() as reg:
        ref = reg.seed("test/private", "v1", IMAGE, user=("alice", "s3cret"))
        denied = py(ours.address, "images", "pull", "--plain-http", ref, namespace=ns)
        assert denied.returncode == 1
        assert "unauthenticated" in denied.stderr.decode() or "401" in denied.stderr.decode()
        wrong = py(
            ours.address, "images", "pull", "--plain-http", "-u", "alice:nope", ref, namespace=ns
        )
        assert wrong.returncode == 1
        out = pull(ours.address, ref, ns, "--user", "alice:s3cret")
        assert f"unpacking linux/amd64 {IMAGE.root.digest}..." in out


def test_pull_over_tls_with_ca(tmp_path: Path, ours: Daemon, ns: str, py: Ctr) -> None:
    require_registry()
    ca = make_ca(tmp_path / "ca")
    server = ca.issue(tmp_path / "ca", "registry")
    reg = Registry(tmp_path / "reg", tls=server)
    reg.tls_ca = ca.cert
    with reg.running():
        ref = reg.seed("test/tls", "v1", IMAGE)
        untrusted = py(ours.address, "images", "pull", ref, namespace=ns)
        assert untrusted.returncode == 1
        assert "certificate" in untrusted.stderr.decode().lower()
        out = ok(
            py(
                ours.address,
                "images",
                "pull",
                "--snapshotter",
                "native",
                "--tlscacert",
                str(ca.cert),
                ref,
                namespace=ns,
            )
        )
        assert f"unpacking linux/amd64 {IMAGE.root.digest}..." in out
        ns2 = ns + "k"
        ok(py(ours.address, "images", "pull", "-k", "--snapshotter", "native", ref, namespace=ns2))


def test_pull_through_down_mirror_falls_back(
    registry: Registry, tmp_path: Path, ours: Daemon, ns: str, py: Ctr
) -> None:
    hosts = tmp_path / "certs.d"
    directory = hosts / registry.host
    directory.mkdir(parents=True)
    down = f"127.0.0.1:{free_port()}"
    (directory / "hosts.toml").write_text(
        f'server = "http://{registry.host}"\n\n'
        f'[host."http://{down}"]\n  capabilities = ["pull", "resolve"]\n'
    )
    ref = f"{registry.host}/test/multi:v1"
    out = ok(
        py(
            ours.address,
            "images",
            "pull",
            "--hosts-dir",
            str(hosts),
            "--snapshotter",
            "native",
            ref,
            namespace=ns,
        )
    )
    assert f"unpacking linux/amd64 {IMAGE.root.digest}..." in out
    bad = py(ours.address, "images", "pull", "--hosts-dir", str(tmp_path / "missing"), ref)
    assert bad.returncode == 1
    assert "missing" in bad.stderr.decode()


def test_push_to_new_repository_then_pull_back(
    registry: Registry, address: str, ns: str, py: Ctr, pull: Pull
) -> None:
    ref = f"{registry.host}/test/multi:v1"
    ok(py(address, "content", "fetch", "--plain-http", ref, namespace=ns))
    pushed = f"{registry.host}/test/pushed-{ns}:v2"
    out = ok(py(address, "images", "push", "--plain-http", pushed, ref, namespace=ns))
    assert f"manifest-{IMAGE.root.digest}:" in out
    ns2 = ns + "b"
    pull(address, pushed, ns2)
    listed = ok(py(address, "images", "ls", namespace=ns2))
    assert pushed in listed
    assert IMAGE.root.digest in listed
    assert content_digests(py, address, ns) == content_digests(py, address, ns2)
    # the registry serves the same manifest bytes under the new tag
    got = py(address, "content", "fetch-object", "--plain-http", pushed, namespace=ns2)
    assert ok(got) == IMAGE.root.data.decode()


def test_push_by_manifest_digest(registry: Registry, address: str, ns: str, py: Ctr) -> None:
    """`images push --manifest <digest>` pushes that manifest (and what it references)
    from the content store, with no image record needed."""
    ref = f"{registry.host}/test/index:v1"
    ok(py(address, "content", "fetch", "--plain-http", "--all-platforms", ref, namespace=ns))
    pushed = f"{registry.host}/test/bymanifest-{ns}:arm"
    out = ok(
        py(
            address,
            "images",
            "push",
            "--plain-http",
            "--manifest",
            ARM.root.digest,
            pushed,
            namespace=ns,
        )
    )
    assert f"manifest-{ARM.root.digest}:" in out
    got = py(address, "content", "fetch-object", "--plain-http", pushed, namespace=ns)
    assert ok(got) == ARM.root.data.decode()
    bad = py(address, "images", "push", "--plain-http", "--manifest", "sha256:nope", pushed)
    assert bad.returncode == 1
    assert b"invalid manifest digest" in bad.stderr
    missing = "sha256:" + "0" * 64
    gone = py(
        address, "images", "push", "--plain-http", "--manifest", missing, pushed, namespace=ns
    )
    assert gone.returncode == 1
    assert f"manifest {missing} is not in the content store".encode() in gone.stderr


def test_push_object_then_fetch_object(registry: Registry, ours: Daemon, ns: str, py: Ctr) -> None:
    ref = f"{registry.host}/test/multi:v1"
    ok(py(ours.address, "content", "fetch", "--plain-http", ref, namespace=ns))
    target = f"{registry.host}/test/obj-{ns}:v1"

    def push_object(digest: str, media_type: str) -> subprocess.CompletedProcess[bytes]:
        args = ("content", "push-object", "--plain-http", target, digest, media_type)
        return py(ours.address, *args, namespace=ns)

    for blob in [*IMAGE.blobs, IMAGE.root]:  # the manifest last
        ok(push_object(blob.digest, blob.media_type))
    fetched = py(ours.address, "content", "fetch-object", "--plain-http", target, "manifest")
    assert ok(fetched).encode() == IMAGE.root.data
    missing = push_object("sha256:" + "0" * 64, IMAGE.root.media_type)
    assert missing.returncode == 1
    assert "not found" in missing.stderr.decode()


def test_pull_progress_on_a_terminal(registry: Registry, ours: Daemon, ns: str) -> None:
    """With stdout on a pty the table is drawn with colour (and redrawn in place)."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
    ref = f"{registry.host}/test/multi:v1"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pycontainerd.ctr",
            "-a",
            ours.address,
            "-n",
            ns,
            "images",
            "pull",
            "--local",
            "--plain-http",
            "--snapshotter",
            "native",
            ref,
        ],
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        assert ready, "no output from ctr within 60 s"
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(30) == 0, err
    out = b"".join(chunks).decode()
    assert "\x1b[32m" + "+" * 38 + "\x1b[0m" in out
    assert f"manifest-{IMAGE.root.digest}:" in out
    assert "elapsed: " in out
    assert f"unpacking linux/amd64 {IMAGE.root.digest}..." in out
