"""Namespaces, content, images, leases and events end to end: the Go ctr against our daemon."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.testing import wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from tests.e2e.conftest import Daemon, OciImage

    MakeArchive = Callable[[str, Iterable[bytes]], OciImage]

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def human(size: int) -> str:
    """containerd's ``progress.Bytes``: binary units, one decimal."""
    value = float(size)
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    unit = 0
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {units[unit]}"


def table(out: str) -> list[list[str]]:
    """Rows of a ctr table (header dropped), split on runs of whitespace."""
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def test_namespaces_labels_and_nonempty_rm(daemon: Daemon, oci_archive: MakeArchive) -> None:
    daemon.ok("namespaces", "create", "foo", "mylabel=bar")
    assert ["foo", "mylabel=bar"] in table(daemon.ok("namespaces", "ls"))
    daemon.ok("namespaces", "label", "foo", "other=x")
    assert ["foo", "mylabel=bar,other=x"] in table(daemon.ok("namespaces", "ls"))
    daemon.ok("namespaces", "label", "foo", "other=")
    assert ["foo", "mylabel=bar"] in table(daemon.ok("namespaces", "ls"))

    blob = b"content that keeps foo busy"
    daemon.commit_rooted(blob, root="now", namespace="foo")
    res = daemon.ctr("namespaces", "rm", "foo")
    assert res.returncode == 1
    assert (
        'namespace "foo" must be empty, but it still has blobs: failed precondition' in res.stderr
    )

    # Images are per namespace.
    mine = oci_archive("example.test/ns/foo:1", [b"foo layer"])
    theirs = oci_archive("example.test/ns/default:1", [b"default layer"])
    daemon.ok("images", "import", "--no-unpack", str(mine.path), namespace="foo")
    daemon.ok("images", "import", "--no-unpack", str(theirs.path))
    in_foo = daemon.ok("images", "ls", "-q", env={"CONTAINERD_NAMESPACE": "foo"}).split()
    assert in_foo == [mine.name]
    assert daemon.ok("images", "ls", "-q").split() == [theirs.name]

    # Emptied, it goes.
    daemon.ok("images", "rm", "--sync", mine.name, namespace="foo")
    daemon.ok("content", "rm", digest(blob), namespace="foo")
    daemon.ok("namespaces", "rm", "foo")
    assert "foo" not in daemon.ok("namespaces", "ls", "-q").split()


@pytest.mark.slow
def test_content_ingest_get_active_resume_label_rm(daemon: Daemon, tmp_path: Path) -> None:
    size = 512 * 1024 * 1024
    src = tmp_path / "big"
    with src.open("wb") as out:  # sparse except for a marker at each end
        out.write(b"head")
        out.seek(size - 4)
        out.write(b"tail")
    sha = hashlib.sha256()
    with src.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    dgst = "sha256:" + sha.hexdigest()

    # An interrupted ingest shows in `content active`...
    with subprocess.Popen(
        ["/usr/bin/ctr", "-a", daemon.address, "content", "ingest", "--expected-size",
         str(size), "big"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as writer:  # fmt: skip
        assert writer.stdin is not None
        with src.open("rb") as fh:
            writer.stdin.write(fh.read(64 * 1024 * 1024))
            writer.stdin.flush()

        def active() -> list[list[str]]:
            return [r for r in table(daemon.ok("content", "active")) if r and r[0] == "big"]

        wait_for(lambda: bool(active()), what="the ingest to show as active")
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    row = active()
    assert row, "the interrupted ingest disappeared"

    # ...and resuming it completes the blob.
    with src.open("rb") as fh:
        res = subprocess.run(
            ["/usr/bin/ctr", "-a", daemon.address, "content", "ingest", "--expected-size",
             str(size), "--expected-digest", dgst, "big"],
            stdin=fh,
            capture_output=True,
            timeout=120,
            check=False,
        )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert not active()
    assert [dgst, "536.9MB"] == table(daemon.ok("content", "ls"))[0][:2]  # decimal units

    # `content get` returns the same bytes.
    got = hashlib.sha256()
    with subprocess.Popen(
        ["/usr/bin/ctr", "-a", daemon.address, "content", "get", dgst], stdout=subprocess.PIPE
    ) as reader:
        assert reader.stdout is not None
        while chunk := reader.stdout.read(1 << 20):
            got.update(chunk)
    assert reader.returncode == 0
    assert "sha256:" + got.hexdigest() == dgst

    daemon.ok("content", "label", dgst, "a=b", "containerd.io/gc.root=x")
    # The Go ctr joins labels in map order, which Go randomises.
    labels = table(daemon.ok("content", "ls"))[0][-1]
    assert sorted(labels.split(",")) == ["a=b", "containerd.io/gc.root=x"]
    daemon.ok("content", "rm", dgst)
    assert daemon.ok("content", "ls", "-q").split() == []


def test_import_ls_tag_label_rm_and_second_namespace(
    daemon: Daemon, oci_archive: MakeArchive
) -> None:
    image = oci_archive("example.test/e2e/app:1.0", [b"layer one" * 50, b"layer two"])
    daemon.ok("images", "import", "--no-unpack", str(image.path))
    rows = table(daemon.ok("images", "ls"))
    assert len(rows) == 1
    ref, kind, dgst, *size_and_rest = rows[0]
    assert (ref, kind, dgst) == (image.name, MANIFEST, image.manifest)
    assert " ".join(size_and_rest[:2]) == human(image.size)
    assert size_and_rest[2] == "linux/amd64"
    assert set(image.blobs) <= set(daemon.ok("content", "ls", "-q").split())

    daemon.ok("images", "tag", image.name, "example.test/e2e/app:latest")
    assert daemon.ok("images", "ls", "-q").split() == [image.name, "example.test/e2e/app:latest"]
    daemon.ok("images", "label", image.name, "team=e2e")
    row = next(r for r in table(daemon.ok("images", "ls")) if r[0] == image.name)
    assert row[-1] == "team=e2e"

    # A second namespace: the image's blobs are shared, not written again
    # (same inodes). The archive's own index.json is written by each import
    # and is garbage once no image points at it, so it may come and go.
    blob_dir = daemon.content_root / "blobs" / "sha256"

    def inodes() -> dict[str, int]:
        return {d: os.stat(blob_dir / d.removeprefix("sha256:")).st_ino for d in image.blobs}

    before = inodes()
    daemon.ok("images", "import", "--no-unpack", str(image.path), namespace="second")
    assert inodes() == before
    assert daemon.ok("images", "ls", "-q", namespace="second").split() == [image.name]
    assert set(image.blobs) <= set(daemon.ok("content", "ls", "-q", namespace="second").split())

    daemon.ok("images", "rm", "example.test/e2e/app:latest")
    assert daemon.ok("images", "ls", "-q").split() == [image.name]
    missing = daemon.ctr("images", "rm", "example.test/e2e/none:1")
    assert missing.returncode == 0  # ctr only warns on a missing image
    assert "not found" in missing.stderr


def test_leases_create_ls_rm(daemon: Daemon) -> None:
    out = daemon.ok("leases", "create", "--id", "l1", "--expires", "0", "purpose=e2e")
    assert out.strip() == "Lease created: l1" or "l1" in out
    rows = table(daemon.ok("leases", "ls"))
    assert len(rows) == 1
    lease_id, created, labels = rows[0]
    assert lease_id == "l1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    assert labels == "purpose=e2e"
    generated = daemon.ok("leases", "create").strip().split()[-1]
    assert generated in daemon.ok("leases", "ls", "-q").split()
    daemon.ok("leases", "rm", "l1", generated)
    assert daemon.ok("leases", "ls", "-q").split() == []
    res = daemon.ctr("leases", "rm", "nope")
    assert res.returncode == 1
    assert 'lease "nope": not found' in res.stderr


EVENT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \+0000 UTC) (\S+) (/\S+) (\{.*\})$"
)


def test_events_lines(daemon: Daemon, oci_archive: MakeArchive, tmp_path: Path) -> None:
    out_path = tmp_path / "events.txt"

    def lines() -> list[str]:
        return out_path.read_text().splitlines()

    def wait(pred: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not pred():
            if time.monotonic() > deadline:
                msg = f"timed out waiting for {what}: {lines()}"
                raise AssertionError(msg)
            time.sleep(0.05)

    with (
        out_path.open("w") as out_file,
        subprocess.Popen(
            ["/usr/bin/ctr", "-a", daemon.address, "events"],
            stdout=out_file,
            stderr=subprocess.DEVNULL,
        ) as events,
    ):
        # The subscription is up once an event of ours arrives: until then,
        # publish probes (on a loaded machine ctr takes a while to subscribe).
        probes = 0

        def subscribed() -> bool:
            nonlocal probes
            if any("/namespaces/create" in line for line in lines()):
                return True
            probes += 1
            daemon.ok("namespaces", "create", f"probe-{probes}")
            return False

        wait(subscribed, "the events subscription")
        daemon.ok("namespaces", "create", "evtest", "a=b")
        daemon.ok("namespaces", "label", "evtest", "c=d")
        image = oci_archive("example.test/ev/img:1", [b"event layer"])
        daemon.ok("images", "import", "--no-unpack", str(image.path), namespace="evtest")
        daemon.ok("images", "label", image.name, "k=v", namespace="evtest")
        daemon.ok("images", "rm", "--sync", image.name, namespace="evtest")
        blob = b"to delete"
        daemon.ok("content", "ingest", "x", input=blob, namespace="evtest")
        daemon.ok("content", "rm", digest(blob), namespace="evtest")
        daemon.ok("namespaces", "rm", "evtest")
        wait(
            lambda: any(line.split()[4:6] == ["evtest", "/namespaces/delete"] for line in lines()),
            "the last event",
        )
        events.send_signal(signal.SIGTERM)
        events.wait(10)
    seen = []
    for line in lines():
        m = EVENT_LINE.match(line)
        assert m, f"not upstream's event line format: {line!r}"
        seen.append((m.group(2), m.group(3), json.loads(m.group(4))))
    expected = [
        ("evtest", "/namespaces/create", {"name": "evtest", "labels": {"a": "b"}}),
        ("evtest", "/namespaces/update", {"name": "evtest", "labels": {"a": "b", "c": "d"}}),
        ("evtest", "/images/create", {"name": image.name}),
        ("evtest", "/images/update", {"name": image.name, "labels": {"k": "v"}}),
        ("evtest", "/images/delete", {"name": image.name}),
        ("evtest", "/content/delete", {"digest": digest(blob)}),
        ("evtest", "/namespaces/delete", {"name": "evtest"}),
    ]
    for event in expected:
        assert event in seen, f"missing {event} in {seen}"
    order = [seen.index(e) for e in expected]
    assert order == sorted(order)
