"""Pulls and snapshots: containerd and pycontainerd side by side, same Go ``ctr``.

Each daemon gets a fresh root, state and socket on tmpfs (``/dev/shm``) per
measurement, so every pull is cold. A local ``docker-registry`` on 127.0.0.1
serves the images of ``images.py`` plus a 128-layer one built here. Prints one
row per metric with both values and the ratio (ours / containerd's). A
benchmark, not a test: a slow number never fails it.

    uv run python bench/pull.py [--runs N] [--calls N] [--layers N]

Metrics:

- ``pull_big_s``: median wall time of ``ctr images pull --plain-http`` (fetch and
  unpack into overlayfs) of ``bench/big`` (20 layers, ~86 MB, 5 000 small files);
- ``pull_big_native_s``: the same with ``--snapshotter native``;
- ``sn_prepare_ms`` / ``sn_commit_ms``: median wall time of one
  ``ctr snapshots prepare`` / ``ctr snapshots commit`` call (a new layer on the
  previous one each time, so the chain grows);
- ``pull_deep_s`` and ``mount_deep_ms``: pull of a ``--layers``-layer image
  (one small file per layer), then ``ctr images mount`` of it (an overlay with
  that many lowerdirs, checked by reading the first and last layer's files).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import images  # the sibling modules: a script's own directory is on sys.path
from _harness import Peer, Row, parse_args, peers, print_table, running

Measure = Callable[[Peer], "dict[str, float | None]"]


def ctr(peer: Peer, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The Go ``ctr`` against ``peer`` with a timeout long enough for a pull."""
    return peer.ctr(*args, timeout="300s")


def deep_image(layers: int) -> images.Image:
    """``bench/deep``: ``layers`` layers, each adding ``l<i>/file`` and rewriting ``top``."""
    built = []
    for i in range(layers):
        entries = [
            images._dir(f"l{i:03d}"),
            images._file(f"l{i:03d}/file", f"layer {i}\n".encode()),
            images._file("top", f"{i}\n".encode()),
        ]
        built.append(images.make_layer(entries))
    return images.single("bench/deep", built)


def _timed_pull(peer: Peer, ref: str, *extra: str) -> float | None:
    t0 = time.monotonic()
    res = ctr(peer, "images", "pull", "--plain-http", *extra, ref)
    elapsed = time.monotonic() - t0
    if res.returncode != 0:
        print(f"  {peer.name}: pull {ref} failed: {res.stderr.decode().strip()}")
        return None
    return elapsed


def cold_pulls(ref: str, runs: int, *extra: str) -> Measure:
    def measure(peer: Peer) -> dict[str, float | None]:
        samples = []
        for _ in range(runs):
            with running(peer):
                value = _timed_pull(peer, ref, *extra)
            if value is None:
                return {"": None}
            samples.append(value)
        return {"": statistics.median(samples)}

    return measure


def snapshot_calls(calls: int) -> Measure:
    def measure(peer: Peer) -> dict[str, float | None]:
        prepare, commit = [], []
        with running(peer):
            parent = ""
            for i in range(calls + 3):
                t0 = time.perf_counter()
                a = ctr(peer, "snapshots", "prepare", f"active-{i}", parent)
                t1 = time.perf_counter()
                b = ctr(peer, "snapshots", "commit", f"layer-{i}", f"active-{i}")
                t2 = time.perf_counter()
                for res in (a, b):
                    if res.returncode != 0:
                        print(f"  {peer.name}: {res.stderr.decode().strip()}")
                        return {"prepare": None, "commit": None}
                if i >= 3:  # warm-up
                    prepare.append((t1 - t0) * 1000)
                    commit.append((t2 - t1) * 1000)
                parent = f"layer-{i}"
        return {"prepare": statistics.median(prepare), "commit": statistics.median(commit)}

    return measure


def deep_mount(ref: str, layers: int) -> Measure:
    def measure(peer: Peer) -> dict[str, float | None]:
        failed: dict[str, float | None] = {"pull": None, "mount": None}
        target = Path(tempfile.mkdtemp(prefix="pcdmnt", dir="/tmp"))
        try:
            with running(peer):
                pulled = _timed_pull(peer, ref)
                if pulled is None:
                    return failed
                t0 = time.monotonic()
                res = ctr(peer, "images", "mount", ref, str(target))
                mounted = (time.monotonic() - t0) * 1000
                if res.returncode != 0:
                    print(f"  {peer.name}: mount failed: {res.stderr.decode().strip()}")
                    return {"pull": pulled, "mount": None}
                try:
                    first = (target / "l000/file").read_text()
                    last = (target / f"l{layers - 1:03d}/file").read_text()
                    top = (target / "top").read_text()
                    ok = (first, last, top) == (
                        "layer 0\n",
                        f"layer {layers - 1}\n",
                        f"{layers - 1}\n",
                    )
                finally:
                    ctr(peer, "images", "unmount", "--rm", str(target))
                if not ok:
                    print(f"  {peer.name}: the mounted {layers}-layer image shows wrong files")
                    return {"pull": pulled, "mount": None}
                return {"pull": pulled, "mount": mounted}
        finally:
            if os.path.ismount(target):
                subprocess.run(["umount", "-l", str(target)], check=False)
            shutil.rmtree(target, ignore_errors=True)

    return measure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="cold pulls per pull metric")
    parser.add_argument("--calls", type=int, default=30, help="prepare/commit pairs")
    parser.add_argument("--layers", type=int, default=128, help="layers of the deep image")
    args = parse_args(parser, images.REGISTRY_BIN)
    if args is None:
        return 1
    if os.geteuid() != 0:
        print("bench: needs root (unpacking mounts snapshots)", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    big = next(i for i in images.build_images() if i.repo == "bench/big")
    deep = deep_image(args.layers)
    print(f"built images in {time.monotonic() - t0:.1f}s", flush=True)
    with images.Registry() as registry:
        big_ref, deep_ref = images.seed(registry, [big, deep])
        groups: list[tuple[Measure, list[tuple[str, str, str]]]] = [
            (cold_pulls(big_ref, args.runs), [("pull_big_s", "", "<= 1.3x")]),
            (
                cold_pulls(big_ref, args.runs, "--snapshotter", "native"),
                [("pull_big_native_s", "", "")],
            ),
            (
                snapshot_calls(args.calls),
                [("sn_prepare_ms", "prepare", "<= 1.5x"), ("sn_commit_ms", "commit", "<= 1.5x")],
            ),
            (
                deep_mount(deep_ref, args.layers),
                [
                    (f"pull_{args.layers}_layers_s", "pull", ""),
                    (f"mount_{args.layers}_layers_ms", "mount", ""),
                ],
            ),
        ]
        rows = []
        for measure, parts in groups:
            theirs, ours = (measure(peer) for peer in peers())
            for name, part, target in parts:
                rows.append(Row(name, theirs.get(part), ours.get(part), target))
            print(f"  measured {', '.join(p[0] for p in parts)}", flush=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
