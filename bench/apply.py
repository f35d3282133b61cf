"""Layer applier micro-benchmark: extract the bench image's layers with our applier.

Applies three layers of ``bench/big`` (see ``bench/images.py``) to fresh
directories on a tmpfs, as a plain function call in this process, the way
the walking differ does for a local blob (read, inflate, digest, extract in
one thread):

- ``small_files``: 50 directories of 100 small files (5 000 entries);
- ``busybox``: the static busybox binary and its applet symlinks;
- ``filler``: one 4 MB incompressible file.

Prints the median wall and CPU time (user + system, steadier on a loaded
machine) of each over ``--runs`` runs. With ``--profile``,
prints a cProfile of applying the small-files layer once instead. With
``--contend``, a second thread digests data meanwhile, as the downloads of a
pull do: every system call of the applier then gives the GIL away.

    uv run python bench/apply.py --runs 7
    uv run python bench/apply.py --profile

Measured (two shared cores, load 7-11, old and new runs interleaved, medians
of 3-5 runs), small-files layer: without contention about 0.26-0.45 s wall,
0.21-0.26 s CPU before the changes of #12's applier work, 0.25-0.36 s wall,
0.19-0.20 s CPU after; with ``--contend`` 1.55 s wall before, 0.95-1.18 s
after. Under contention the wall time is mostly waiting for the GIL after
each system call, so system calls per entry count more than Python per entry.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import images  # the sibling modules: a script's own directory is on sys.path

from pycontainerd.snapshots import differ


def _apply(blob: Path, target: Path) -> tuple[float, float]:
    """Wall and CPU (this thread's user + system) seconds of applying ``blob`` to ``target``."""
    fd = os.open(blob, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        start, cpu = time.perf_counter(), time.thread_time()
        differ._apply_chunks(differ._fd_chunks(fd, size), "gzip", str(target), False)
        return time.perf_counter() - start, time.thread_time() - cpu
    finally:
        os.close(fd)


def _contend(stop: threading.Event) -> None:
    """Stand in for the downloads of a pull: digesting 64 KiB at a time, a little Python between."""
    buf = bytes(64 * 1024)
    while not stop.is_set():
        hashlib.sha256(buf).digest()
        sum(range(200))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--contend", action="store_true", help="a second thread digests meanwhile (GIL contention)"
    )
    args = parser.parse_args()
    stop = threading.Event()
    if args.contend:
        threading.Thread(target=_contend, args=(stop,), daemon=True).start()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    work = Path(tempfile.mkdtemp(prefix="pcdbench-apply-", dir=base))
    try:
        layers = {
            "small_files": images.small_files_layer(),
            "busybox": images.busybox_layer(),
            "filler": images.filler_layer(0, 4 * 1024 * 1024),
        }
        blobs = {}
        for name, layer in layers.items():
            blobs[name] = work / f"{name}.tar.gz"
            blobs[name].write_bytes(layer.blob.data)
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            _apply(blobs["small_files"], Path(tempfile.mkdtemp(dir=work)))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return 0
        times: dict[str, list[float]] = {name: [] for name in blobs}
        cpus: dict[str, list[float]] = {name: [] for name in blobs}
        for _ in range(args.runs):
            for name, blob in blobs.items():
                target = Path(tempfile.mkdtemp(dir=work))
                wall, cpu = _apply(blob, target)
                times[name].append(wall)
                cpus[name].append(cpu)
                shutil.rmtree(target)
        for name, values in times.items():
            print(
                f"{name:12s} wall median {statistics.median(values) * 1000:7.1f} ms"
                f"  min {min(values) * 1000:7.1f} ms"
                f"  cpu median {statistics.median(cpus[name]) * 1000:7.1f} ms"
                f"  ({len(values)} runs)"
            )
    finally:
        stop.set()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
