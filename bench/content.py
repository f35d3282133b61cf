"""Content store throughput, containerd and pycontainerd side by side, with the Go ``ctr``.

    uv run python bench/content.py [--mib 512] [--runs 3]

- ``content_ingest_mib_s``: ``ctr content ingest <ref> < file`` of a random
  file (on the same tmpfs as the daemons' roots), MiB per second, median of
  ``--runs`` (each run changes the file's first bytes, so every run writes a
  new blob). Target: at least containerd's throughput.
- ``content_get_mib_s``: ``ctr content get <digest> > /dev/null``, MiB per
  second, median. The blob read is written beforehand through ``Content.Write``
  with a ``containerd.io/gc.root`` label: ``ctr content ingest`` holds its blob
  with a lease it deletes on exit, so the garbage collector may remove that
  blob at any moment after. (Go's ``ctr`` reads in 32 KiB ``Read`` calls, so
  this measures the per-call cost as much as bytes per second.) Target: at
  least containerd's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from _harness import (
    GC_ROOT,
    Peer,
    Row,
    channel,
    check_binaries,
    peers,
    print_table,
    running,
    tmpfs_dir,
    write_blob,
)

if TYPE_CHECKING:
    from pathlib import Path


def make_file(path: Path, mib: int) -> None:
    chunk = os.urandom(1 << 20)
    with path.open("wb") as fh:
        for i in range(mib):
            fh.write(i.to_bytes(8, "big") + chunk[8:])


def _stamp(path: Path, run: int, peer: str) -> None:
    """Make the file's content unique for (peer, run)."""
    with path.open("r+b") as fh:
        fh.write(f"{peer[:8]:<8}{run:08d}".encode())


def measure(peer: Peer, path: Path, runs: int) -> tuple[float, float]:
    """(ingest MiB/s, get MiB/s) medians for ``peer``."""
    mib = path.stat().st_size / (1 << 20)
    ingest, get = [], []
    with running(peer):
        for run in range(runs):
            _stamp(path, run, peer.name)
            with path.open("rb") as fh:
                t0 = time.perf_counter()
                peer.ctr_ok("content", "ingest", f"bench-{run}", stdin=fh)
                ingest.append(mib / (time.perf_counter() - t0))
        _stamp(path, runs, peer.name)
        with channel(peer) as ch:
            digest = write_blob(ch, path, ref="bench-get", labels=GC_ROOT)
        for _ in range(runs):
            t0 = time.perf_counter()
            peer.ctr_ok("content", "get", digest, stdout=subprocess.DEVNULL)
            get.append(mib / (time.perf_counter() - t0))
    return statistics.median(ingest), statistics.median(get)


def rows(mib: int = 512, runs: int = 3) -> list[Row]:
    base = tmpfs_dir()
    path = base / "blob"
    try:
        make_file(path, mib)
        (t_ing, t_get), (o_ing, o_get) = (measure(p, path, runs) for p in peers())
    finally:
        path.unlink(missing_ok=True)
        base.rmdir()
    return [
        Row(f"content_ingest_{mib}m_mib_s", t_ing, o_ing, ">= 1.0x"),
        Row(f"content_get_{mib}m_mib_s", t_get, o_get, ">= 1.0x"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mib", type=int, default=512, help="blob size in MiB")
    parser.add_argument("--runs", type=int, default=3, help="ingest/get runs per daemon")
    args = parser.parse_args()
    if (missing := check_binaries()) is not None:
        print(missing, file=sys.stderr)
        return 1
    print_table(rows(args.mib, args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
