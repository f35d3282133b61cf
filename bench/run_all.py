"""Every side-by-side benchmark in one run, one summary table at the end.

    uv run python bench/run_all.py [--quick] [--only daemons,content,metadata,gc,runtime]

Runs ``daemons.py`` (start, ``ctr version``, idle RSS), ``content.py``,
``metadata.py``, ``garbage.py`` and ``runtime.py`` with their defaults (``--quick``: smaller sizes,
for a smoke run), printing each part's table as it finishes and all rows
together at the end. A benchmark, never a test: it exits non-zero only when a
daemon cannot be started or a part crashes, never on a missed target. Takes
about ten minutes with the defaults on a two-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import TYPE_CHECKING

import content
import daemons
import garbage
import metadata
import runtime
from _harness import Row, parse_args, peers, print_table

if TYPE_CHECKING:
    from collections.abc import Callable

PARTS = ("daemons", "content", "metadata", "gc", "runtime")


def daemon_rows(quick: bool) -> list[Row]:
    args = argparse.Namespace(runs=2 if quick else 5, calls=5 if quick else 20, refs=[])
    out = []
    for name, target in (
        ("start_to_version_s", ""),
        ("ctr_version_ms", ""),
        ("idle_rss_mib", "<= 1.5x"),
    ):
        theirs, ours = (daemons.METRICS[name](p, args) for p in peers())
        out.append(Row(name, theirs, ours, target))
    return out


def gc_rows(quick: bool) -> list[Row]:
    argv = ["--blobs", "20000", "--snapshots", "2000", "--stream-seconds", "10"] if quick else []
    return garbage.rows(garbage.parser().parse_args(argv))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated of {PARTS}")
    args = parse_args(parser)
    if args is None:
        return 1
    q = args.quick
    parts: dict[str, Callable[[], list[Row]]] = {
        "daemons": lambda: daemon_rows(q),
        "content": lambda: content.rows(64 if q else 512, 2 if q else 3),
        "metadata": lambda: metadata.rows(50 if q else 500, 1000 if q else 10_000),
        "gc": lambda: gc_rows(q),
        "runtime": lambda: runtime.rows(5 if q else 15, 10, 3 if q else 5, image=True),
    }
    every: list[Row] = []
    failed = False
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        t0 = time.monotonic()
        try:
            got = parts[name]()
        except Exception:  # report, go on with the other parts
            traceback.print_exc()
            failed = True
            continue
        print_table(got)
        print(f"   ({time.monotonic() - t0:.0f}s)\n", flush=True)
        every += got
    print("== summary (ratio = pycontainerd / containerd)")
    print_table(every)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
