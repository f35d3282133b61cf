"""Garbage collection: synchronous image delete, a big collection, the scheduler's share.

(Not ``gc.py``: the standard library's built-in ``gc`` would shadow it on import.)

    uv run python bench/garbage.py [--runs 1] [--blobs 100000] [--snapshots 10000]
                              [--stream-seconds 20] [--rate 50] [metric ...]

Metrics:

- ``images_rm_sync_big_ms`` (side by side): ``ctr images pull --plain-http`` of
  the 20-layer ``bench/big`` image from a local docker-registry (``images.py``),
  then the wall time of ``ctr images rm --sync``; after it ``ctr content ls``
  must be empty (noted when not). ``n/a`` with the reason when a daemon cannot
  pull. Target: <= 1.5x containerd's.
- ``gc_collect_<blobs>_s`` (ours, in process): one collection by
  ``pycontainerd.metadata.gc.Collector`` over a database seeded in bulk SQL with
  ``blobs`` content records (90 % reachable: images -> manifests ->
  ``gc.ref.content`` labels -> layers; 10 % garbage, each with a file in a
  real ``LocalStore`` so the backend cleanup has work too) and ``snapshots``
  snapshot records (chains of ten; half reachable from containers). No
  snapshotter backend is attached: snapshot rows are marked and swept,
  nothing is removed on disk. A second, idle collection is timed too.
- ``gc_share_pct`` (side by side): a steady stream of ``Images.Delete`` calls
  (``--rate`` per second for ``--stream-seconds``; every image holds its own
  manifest blob, so every delete leaves garbage) against a daemon started with
  ``--log-level debug``; the durations of the ``garbage collected`` log lines
  inside the window, summed, over the window's wall time. Target: <= 2 %.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import shutil
import sqlite3
import sys
import time
from typing import TYPE_CHECKING, Any

import images as bench_images
from _harness import (
    Peer,
    Row,
    channel,
    containerd_peer,
    ns_metadata,
    pycontainerd_peer,
    running,
    table_main,
    tmpfs_dir,
    write_blob,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

NS = "default"


# -- images rm --sync -------------------------------------------------------------------


def rm_sync_ms(peer: Peer, ref: str, runs: int) -> tuple[float | None, str]:
    samples = []
    note = ""
    with running(peer):
        for _ in range(runs):
            res = peer.ctr("images", "pull", "--plain-http", ref, timeout="600s")
            if res.returncode != 0:
                err = res.stderr.decode(errors="replace").strip().splitlines()
                return None, f"{peer.name} cannot pull: {err[-1] if err else res.returncode}"
            t0 = time.perf_counter()
            peer.ctr_ok("images", "rm", "--sync", ref)
            samples.append((time.perf_counter() - t0) * 1000)
            left = peer.ctr_ok("content", "ls", "-q").split()
            if left:
                note = f"{peer.name}: {len(left)} blobs left right after rm --sync"
    return min(samples), note


def rm_sync_row(runs: int) -> Row:
    name = "images_rm_sync_big_ms"
    if not bench_images.registry_available():
        return Row(name, None, None, "<= 1.5x", f"{bench_images.REGISTRY_BIN} missing")
    big = [i for i in bench_images.build_images() if i.repo == "bench/big"]
    with bench_images.Registry() as registry:
        (ref,) = bench_images.seed(registry, big)
        theirs, n1 = rm_sync_ms(containerd_peer(), ref, runs)
        ours, n2 = rm_sync_ms(pycontainerd_peer(), ref, runs)
    note = "; ".join(n for n in (n1, n2) if n)
    return Row(name, theirs, ours, "<= 1.5x", note)


# -- one big collection, in process -----------------------------------------------------


def _digest(kind: str, i: int) -> str:
    return "sha256:" + hashlib.sha256(f"{kind}-{i}".encode()).hexdigest()


def seed_database(path: Path, content_root: Path, blobs: int, snapshots: int) -> None:
    """Fill a migrated database (and the content store's blob directory) in bulk."""
    from pycontainerd.metadata.gc import REF_CONTENT

    now = time.time_ns()
    per_image = 10  # a manifest and nine layers/config
    images = blobs * 9 // 10 // per_image
    garbage = blobs - images * per_image
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute(
        "INSERT OR IGNORE INTO namespaces (name, labels, created_at, updated_at)"
        " VALUES (?, '{}', ?, ?)",
        (NS, now, now),
    )
    blob_rows = []
    image_rows = []
    for i in range(images):
        layers = [_digest(f"layer{i}", j) for j in range(per_image - 1)]
        labels = {f"{REF_CONTENT}.l.{j}": d for j, d in enumerate(layers)}
        manifest = _digest("manifest", i)
        blob_rows.append((NS, manifest, 1000, json.dumps(labels, sort_keys=True), now, now))
        blob_rows += [(NS, d, 1000, "{}", now, now) for d in layers]
        image_rows.append(
            (NS, f"bench.test/img{i}:v1", "application/vnd.oci.image.manifest.v1+json",
             manifest, 1000, "{}", "{}", now, now)
        )  # fmt: skip
    dead = [_digest("garbage", i) for i in range(garbage)]
    blob_rows += [(NS, d, 1000, "{}", now, now) for d in dead]
    conn.executemany(
        "INSERT INTO blobs (namespace, digest, size, labels, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        blob_rows,
    )
    conn.executemany(
        "INSERT INTO images (namespace, name, media_type, digest, size, annotations, labels,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        image_rows,
    )
    snap_rows = []
    container_rows = []
    chains = snapshots // 10
    for c in range(chains):
        parent = ""
        for j in range(10):
            key = f"snap-{c}-{j}"
            snap_rows.append(
                (NS, "overlayfs", key, f"{c * 10 + j}", parent, "committed", "{}", now, now)
            )
            parent = key
        if c % 2 == 0:
            container_rows.append(
                (NS, f"ctr{c}", "{}", "", "io.containerd.runc.v2", "overlayfs", parent, now, now)
            )
    conn.executemany(
        "INSERT INTO snapshots (namespace, snapshotter, key, backend_key, parent, kind, labels,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        snap_rows,
    )
    conn.executemany(
        "INSERT INTO containers (namespace, id, labels, image, runtime_name, snapshotter,"
        " snapshot_key, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        container_rows,
    )
    conn.execute("COMMIT")
    conn.close()
    # the garbage has bytes in the backend; the collector must delete them
    blob_dir = content_root / "blobs" / "sha256"
    blob_dir.mkdir(parents=True, exist_ok=True)
    for d in dead:
        (blob_dir / d.removeprefix("sha256:")).write_bytes(b"x")


async def _collect_twice(path: Path, content_root: Path) -> tuple[Any, Any]:
    from pycontainerd.content.local import LocalStore
    from pycontainerd.metadata.db import MetadataDB
    from pycontainerd.metadata.gc import Collector

    db = MetadataDB.open(path)
    try:
        collector = Collector(db, LocalStore(content_root))
        first = await collector.collect()
        second = await collector.collect()
    finally:
        await db.aclose()
    return first, second


def collect_rows(blobs: int, snapshots: int) -> list[Row]:
    from pycontainerd.metadata.db import MetadataDB

    base = tmpfs_dir()
    try:
        path = base / "meta.db"
        MetadataDB.open(path).close()  # create and migrate the schema
        t0 = time.perf_counter()
        seed_database(path, base / "content", blobs, snapshots)
        print(f"  seeded {blobs} blobs, {snapshots} snapshots in {time.perf_counter() - t0:.1f}s")
        first, second = asyncio.run(_collect_twice(path, base / "content"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    removed = ", ".join(f"{k} {v}" for k, v in first.removed().items() if v)
    return [
        Row(f"gc_collect_{blobs}_s", None, first.seconds, "", f"removed {removed}"),
        Row(f"gc_collect_{blobs}_mark_s", None, first.mark_seconds, "", "mark+sweep transaction"),
        Row(f"gc_collect_{blobs}_idle_s", None, second.seconds, "", "nothing left to remove"),
    ]


# -- the scheduler's share under a stream of deletes ------------------------------------

_GC_LINE = re.compile(r'msg="garbage collected".*?\bd="?([0-9.]+)(ns|µs|us|ms|s)\b')
_UNIT = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def gc_seconds_in(text: str) -> tuple[float, int]:
    """Sum of the ``garbage collected`` durations in a daemon log, and how many."""
    total, count = 0.0, 0
    for m in _GC_LINE.finditer(text):
        total += float(m.group(1)) * _UNIT[m.group(2)]
        count += 1
    return total, count


def gc_share(
    make_peer: Callable[[], Peer], images: int, rate: float, seconds: float
) -> tuple[float, str]:
    from pycontainerd.api.services.images.v1 import images_pb2, images_pb2_grpc
    from pycontainerd.api.types import descriptor_pb2

    peer = make_peer()
    peer.args = ["--log-level", "debug"]
    with running(peer), channel(peer) as ch:
        stub = images_pb2_grpc.ImagesStub(ch)
        md = ns_metadata(NS)
        names = []
        for i in range(images):
            data = json.dumps({"schemaVersion": 2, "bench": i}).encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            name = f"bench.test/gc{i}:v1"
            target = descriptor_pb2.Descriptor(
                media_type="application/vnd.oci.image.manifest.v1+json",
                digest=digest,
                size=len(data),
            )
            req = images_pb2.CreateImageRequest(image=images_pb2.Image(name=name, target=target))
            stub.Create(req, metadata=md)
            write_blob(ch, data, ref=f"gc-{i}", namespace=NS)
            names.append(name)
        time.sleep(1.0)  # let the startup collection pass
        offset = peer.log_path.stat().st_size
        interval = 1.0 / rate
        t0 = time.perf_counter()
        deleted = 0
        while time.perf_counter() - t0 < seconds and deleted < len(names):
            stub.Delete(images_pb2.DeleteImageRequest(name=names[deleted]), metadata=md)
            deleted += 1
            time.sleep(max(0.0, deleted * interval - (time.perf_counter() - t0)))
        wall = time.perf_counter() - t0
        with peer.log_path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    gc_s, count = gc_seconds_in(text)
    return gc_s / wall * 100, f"{peer.name}: {deleted} deletes, {count} collections"


def share_row(rate: float, seconds: float) -> Row:
    images = int(rate * seconds) + 10
    theirs, n1 = gc_share(containerd_peer, images, rate, seconds)
    ours, n2 = gc_share(pycontainerd_peer, images, rate, seconds)
    return Row("gc_share_pct", theirs, ours, "<= 2", f"{n1}; {n2}")


METRICS = ("rm_sync", "collect", "share")


def rows(args: argparse.Namespace) -> list[Row]:
    out: list[Row] = []
    if "rm_sync" in args.metrics:
        out.append(rm_sync_row(args.runs))
    if "collect" in args.metrics:
        out += collect_rows(args.blobs, args.snapshots)
    if "share" in args.metrics:
        out.append(share_row(args.rate, args.stream_seconds))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--runs", type=int, default=1, help="pull + rm --sync rounds per daemon")
    p.add_argument("--blobs", type=int, default=100_000, help="content records to collect over")
    p.add_argument("--snapshots", type=int, default=10_000, help="snapshot records")
    p.add_argument("--rate", type=float, default=50.0, help="image deletes per second")
    p.add_argument("--stream-seconds", type=float, default=20.0, help="length of the stream")
    p.add_argument("metrics", nargs="*", default=list(METRICS), help=f"any of {METRICS}")
    return p


def main() -> int:
    return table_main(parser(), rows)


if __name__ == "__main__":
    sys.exit(main())
