"""Garbage collection end to end (issue 6): containerd's Go ctr against our daemon."""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from tests.e2e.conftest import Daemon, MakeDaemon, OciImage

    MakeArchive = Callable[[str, Iterable[bytes]], OciImage]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def listed(d: Daemon, namespace: str = "default") -> set[str]:
    return set(d.ok("content", "ls", "-q", namespace=namespace).split())


def ingest(d: Daemon, ref: str, data: bytes, namespace: str = "default") -> str:
    d.ok("content", "ingest", ref, input=data, namespace=namespace)
    return digest(data)


def eventually(pred: Callable[[], bool], within: float = 10.0, what: str = "condition") -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if pred():
            return time.monotonic() - start
        time.sleep(0.05)
    msg = f"timed out after {within}s waiting for {what}"
    raise AssertionError(msg)


def add_to_lease(d: Daemon, lease_id: str, dgst: str, namespace: str = "default") -> None:
    """Leases.AddResource (the Go ctr has no command for it)."""
    with grpc.insecure_channel(f"unix://{d.address}") as channel:
        leases_pb2_grpc.LeasesStub(channel).AddResource(
            leases_pb2.AddResourceRequest(
                id=lease_id, resource=leases_pb2.Resource(id=dgst, type="content")
            ),
            metadata=(("containerd-namespace", namespace),),
            timeout=10,
        )


def test_plain_goes_root_stays_lease_holds_until_sync_rm(daemon: Daemon) -> None:
    # An ingested blob is unreferenced until the test labels it or a lease holds it,
    # and any collection in between (the startup one, or one a deletion triggers)
    # rightly removes it: a lease holds each digest before the blob exists.
    daemon.ok("leases", "create", "--id", "setup")
    add_to_lease(daemon, "setup", digest(b"rooted blob"))
    plain = ingest(daemon, "plain", b"no root label")
    rooted = ingest(daemon, "rooted", b"rooted blob")
    daemon.ok("content", "label", rooted, "containerd.io/gc.root=2026-01-01T00:00:00Z")
    daemon.ok("leases", "create", "--id", "hold")
    add_to_lease(daemon, "hold", digest(b"held by a lease"))
    held = ingest(daemon, "held", b"held by a lease")
    daemon.ok("leases", "rm", "setup")
    # A deletion triggers the next collection.
    trigger = ingest(daemon, "trigger", b"deleted to trigger")
    daemon.ok("content", "rm", trigger)
    # The scheduler spaces collections by their cost / pause_threshold (2 %): on a
    # loaded machine the startup collection can cost 200 ms, putting the next 10 s out.
    eventually(
        lambda: plain not in listed(daemon), within=30, what="the plain blob to be collected"
    )
    assert {rooted, held} <= listed(daemon)
    assert plain not in daemon.blobs_on_disk()
    daemon.ok("leases", "rm", "--sync", "hold")
    assert held not in listed(daemon)  # gone when the sync delete returned
    assert held not in daemon.blobs_on_disk()
    assert rooted in listed(daemon)
    assert "garbage collected" in daemon.log()


def test_image_rm_sync_and_shared_layers(daemon: Daemon, oci_archive: MakeArchive) -> None:
    shared = b"shared layer " * 100
    one = oci_archive("example.test/gc/one:1", [shared, b"only in one"])
    two = oci_archive("example.test/gc/two:1", [shared, b"only in two"])
    three = oci_archive("example.test/gc/three:1", [b"only in three"])
    for image in (one, two, three):
        daemon.ok("images", "import", "--no-unpack", str(image.path))
    # A synchronous lease removal returns after a collection that started after
    # it, so one has seen every import's lease deleted.
    daemon.ok("leases", "create", "--id", "flush")
    daemon.ok("leases", "rm", "--sync", "flush")
    assert set(one.blobs) | set(two.blobs) | set(three.blobs) <= listed(daemon)

    daemon.ok("images", "rm", "--sync", one.name)
    after = listed(daemon)
    assert set(two.blobs) <= after
    assert not (set(one.blobs) - set(two.blobs)) & after
    assert not (set(one.blobs) - set(two.blobs)) & daemon.blobs_on_disk()

    # Several refs at once: the Go ctr sends sync with the last one only.
    daemon.ok("images", "rm", "--sync", two.name, three.name)
    assert not (set(two.blobs) | set(three.blobs)) & listed(daemon)
    assert daemon.blobs_on_disk() == set()


def test_expiring_lease_frees_content_on_idle_daemon(daemon: Daemon) -> None:
    start = time.monotonic()
    # Long enough that the three ctr calls below finish before it on a loaded machine.
    daemon.ok("leases", "create", "--id", "short", "--expires", "6s")
    add_to_lease(daemon, "short", digest(b"short lived"))
    held = ingest(daemon, "short", b"short lived")
    assert held in listed(daemon)
    # Nothing else happens on the daemon from here on.
    eventually(
        lambda: held not in daemon.blobs_on_disk(), within=15, what=f"expiry:\n{daemon.log()}"
    )
    # ctr writes the expiry in whole seconds (RFC 3339), so it may be up to 1 s early.
    assert time.monotonic() - start >= 5.0
    assert held not in listed(daemon)
    assert "short" not in daemon.ok("leases", "ls", "-q").split()


@pytest.mark.slow
def test_sigkill_during_sweep_of_many_blobs(make_daemon: MakeDaemon) -> None:
    from pycontainerd.content.local import LocalStore
    from pycontainerd.metadata.db import MetadataDB

    d: Daemon = make_daemon(start=False)
    n = 10_000
    store = LocalStore(d.content_root)
    db = MetadataDB.open(d.root / "io.containerd.metadata.v1.sqlite" / "meta.db")
    rows = []
    kept: set[str] = set()
    (d.content_root / "blobs" / "sha256").mkdir(parents=True)
    for i in range(n):
        data = f"blob number {i}".encode()
        dg = digest(data)
        store.blob_path(dg).write_bytes(data)
        labels = '{"containerd.io/gc.root":"1"}' if i % 100 == 0 else "{}"
        if i % 100 == 0:
            kept.add(dg)
        rows.append(("default", dg, len(data), labels))
    db.update(
        lambda tx: (
            tx.execute(
                "INSERT INTO namespaces (name, created_at, updated_at) VALUES ('default', 0, 0)"
            ),
            tx.executemany(
                "INSERT INTO blobs (namespace, digest, size, labels, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, 0, 0)",
                rows,
            ),
        )
    )
    db.close()

    # The first collection (100 ms after start) sweeps 9 900 blobs; kill it midway.
    d.start(wait=False)
    eventually(lambda: len(d.blobs_on_disk()) < n - 50, within=30, what="the sweep to start")
    d.kill9()
    left = d.blobs_on_disk()
    assert len(kept) < len(left) < n, "the kill did not land in the middle of the sweep"

    d.start()
    # No blob the daemon lists is missing on disk...
    shown = listed(d)
    assert shown <= d.blobs_on_disk()
    assert kept <= shown
    # ...and the collection after the restart finishes the job.
    eventually(lambda: d.blobs_on_disk() == kept, within=60, what="the garbage to go")
    assert listed(d) == kept
