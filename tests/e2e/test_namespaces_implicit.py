"""Namespaces come into being on first use (issue 13): the Go ctr against our daemon.

containerd creates a namespace as a side effect of the first write in it (an
image, container, lease, blob, snapshot) and when a client labels it; its own
test harness labels the default snapshotter of a namespace it never created,
then works in it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from tests.e2e.conftest import Daemon, OciImage

    MakeArchive = Callable[[str, Iterable[bytes]], OciImage]

SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter"


def namespaces(d: Daemon) -> dict[str, str]:
    """``ctr namespaces ls``: name -> labels column."""
    rows = [line.split(None, 1) for line in d.ok("namespaces", "ls").splitlines()[1:]]
    return {row[0]: (row[1].strip() if len(row) > 1 else "") for row in rows if row}


def test_label_a_namespace_never_created_then_use_it(
    daemon: Daemon, oci_archive: MakeArchive
) -> None:
    assert "testing" not in namespaces(daemon)
    daemon.ok("namespaces", "label", "testing", f"{SNAPSHOTTER_LABEL}=native")
    assert namespaces(daemon)["testing"] == f"{SNAPSHOTTER_LABEL}=native"
    # The client reads the namespace's default snapshotter and unpacks there.
    image = oci_archive("example.test/implicit/labelled:1", [b"labelled layer"])
    daemon.ok("images", "import", str(image.path), namespace="testing")
    assert daemon.ok("images", "ls", "-q", namespace="testing").split() == [image.name]
    assert daemon.ok("snapshots", "--snapshotter", "native", "ls", namespace="testing").strip()
    assert not daemon.ok("snapshots", "ls", namespace="testing").splitlines()[1:]


def test_export_then_import_into_a_fresh_namespace(
    daemon: Daemon, oci_archive: MakeArchive, tmp_path: Path
) -> None:
    image = oci_archive("example.test/implicit/moved:1", [b"first layer", b"second layer"])
    daemon.ok("images", "import", str(image.path), namespace="fresh-a")
    exported = tmp_path / "exported.tar"
    daemon.ok("images", "export", str(exported), image.name, namespace="fresh-a")
    daemon.ok("images", "import", str(exported), namespace="fresh-b")
    assert daemon.ok("images", "ls", "-q", namespace="fresh-b").split() == [image.name]
    assert set(image.blobs) <= set(daemon.ok("content", "ls", "-q", namespace="fresh-b").split())
    assert {"fresh-a", "fresh-b"} <= namespaces(daemon).keys()
    # Non-empty: removal is refused with containerd's text.
    res = daemon.ctr("namespaces", "rm", "fresh-b")
    assert res.returncode != 0
    assert (
        'namespace "fresh-b" must be empty, but it still has images, blobs, '
        'snapshots on "overlayfs" snapshotter: failed precondition'
    ) in res.stderr


def test_every_first_write_creates_its_namespace(daemon: Daemon, oci_archive: MakeArchive) -> None:
    image = oci_archive("example.test/implicit/base:1", [b"base layer"])
    daemon.ok("images", "import", "--snapshotter", "native", str(image.path), namespace="ns-img")
    daemon.ok("leases", "create", "--id", "l1", namespace="ns-lease")
    daemon.ok("content", "ingest", "r1", input=b"first blob", namespace="ns-blob")
    daemon.ok("snapshots", "--snapshotter", "native", "prepare", "k1", namespace="ns-snap")
    daemon.ok(
        "containers", "create", "--snapshotter", "native", image.name, "c1", namespace="ns-img"
    )
    daemon.ok("containers", "create", "--rootfs", str(daemon.base), "c2", namespace="ns-ctr")
    assert {"ns-img", "ns-lease", "ns-blob", "ns-snap", "ns-ctr"} <= namespaces(daemon).keys()
    assert daemon.ok("containers", "ls", "-q", namespace="ns-img").split() == ["c1"]
    assert daemon.ok("containers", "ls", "-q", namespace="ns-ctr").split() == ["c2"]
    # Leases alone do not keep a namespace: it goes, as upstream.
    daemon.ok("namespaces", "rm", "ns-lease")
    res = daemon.ctr("namespaces", "rm", "ns-snap")
    assert 'still has snapshots on "native" snapshotter: failed precondition' in res.stderr
    assert "ns-lease" not in namespaces(daemon)
