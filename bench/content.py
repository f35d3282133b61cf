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

Both daemons run at once and each run alternates between them, so load from
elsewhere on a shared machine falls on both alike.
"""

from __future__ import annotations

import argparse
import contextlib
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
    peers,
    running,
    table_main,
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


def _ingest(peer: Peer, path: Path, run: int) -> float:
    """One ``ctr content ingest`` of a fresh blob, in MiB/s."""
    _stamp(path, run, peer.name)
    with path.open("rb") as fh:
        t0 = time.perf_counter()
        peer.ctr_ok("content", "ingest", f"bench-{run}", stdin=fh)
        return path.stat().st_size / (1 << 20) / (time.perf_counter() - t0)


def _get(peer: Peer, digest: str, mib: float) -> float:
    """One ``ctr content get`` to /dev/null, in MiB/s."""
    t0 = time.perf_counter()
    peer.ctr_ok("content", "get", digest, stdout=subprocess.DEVNULL)
    return mib / (time.perf_counter() - t0)


def rows(mib: int = 512, runs: int = 3) -> list[Row]:
    """Both daemons run at once and the runs alternate between them, so load from
    elsewhere on a shared machine hits both alike."""
    base = tmpfs_dir()
    path = base / "blob"
    both = peers()
    ingest: dict[str, list[float]] = {p.name: [] for p in both}
    get: dict[str, list[float]] = {p.name: [] for p in both}
    try:
        make_file(path, mib)
        with contextlib.ExitStack() as stack:
            for peer in both:
                stack.enter_context(running(peer))
            for run in range(runs):
                for peer in both if run % 2 == 0 else both[::-1]:
                    ingest[peer.name].append(_ingest(peer, path, run))
            digests = {}
            for peer in both:
                _stamp(path, runs, peer.name)
                with channel(peer) as ch:
                    digests[peer.name] = write_blob(ch, path, ref="bench-get", labels=GC_ROOT)
            for run in range(runs):
                for peer in both if run % 2 == 0 else both[::-1]:
                    get[peer.name].append(_get(peer, digests[peer.name], mib))
    finally:
        path.unlink(missing_ok=True)
        base.rmdir()
    theirs, ours = (p.name for p in both)
    med = statistics.median
    return [
        Row(f"content_ingest_{mib}m_mib_s", med(ingest[theirs]), med(ingest[ours]), ">= 1.0x"),
        Row(f"content_get_{mib}m_mib_s", med(get[theirs]), med(get[ours]), ">= 1.0x"),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mib", type=int, default=512, help="blob size in MiB")
    parser.add_argument(
        "--runs", type=int, default=3, help="ingest/get runs per daemon (they alternate)"
    )
    return table_main(parser, lambda args: rows(args.mib, args.runs))


if __name__ == "__main__":
    sys.exit(main())
