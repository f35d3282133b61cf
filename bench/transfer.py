"""Server-side pulls through the Transfer service: containerd 2.x and pycontainerd, interleaved.

containerd 2.x's ``ctr images pull`` (without ``--local``) asks the daemon to
pull; this compares that path on both daemons with the same 2.x ``ctr``. The
Debian packages ship containerd 1.6, so the 2.x ``ctr`` and ``containerd`` are
given on the command line (built by hand from containerd's v2.1 tag; nothing
here builds them). Each pull is cold (a fresh root on tmpfs per run) and the
runs alternate between the daemons, so drift on a shared machine hits both.

    uv run python bench/transfer.py --ctr PATH --containerd PATH [--runs N]

Metrics:

- ``transfer_pull_big_s``: median wall time of ``ctr images pull --plain-http``
  (Transfer path: fetch, verify and unpack into overlayfs in the daemon) of
  ``bench/big`` (20 layers);
- ``transfer_pull_big_warm_s``: the same pull on a daemon that has already
  made one Transfer pull (of a one-layer image sharing nothing with
  ``bench/big``): a long-lived daemon's pull, without the first pull's one-time
  imports (ours loads its registry stack lazily, containerd has it linked in);
- ``local_pull_big_s``: the same with ``--local`` (the client-side path), for
  reference;
- ``progress_overhead_pct`` (ours only): the median, over ``PAIRS`` pairs per
  run, of the ratio of two library ``Client.transfer`` pulls on one daemon,
  one with a progress stream and one without, in alternating order, after an
  untimed pull (so the first pull's imports do not drown the difference); the
  image is removed and collected after each. A pull of ``bench/big`` sends about
  50 progress events, as containerd 2.1's does. Pulls on separate fresh
  daemons (how this was measured before) spread by 20 % either way here,
  more than those events cost.

Our daemons run with bytecode caching on (``PYTHONDONTWRITEBYTECODE`` is
dropped, the cache goes to a temporary ``PYTHONPYCACHEPREFIX``), as an
installed package has its bytecode: otherwise the first pull of each fresh
daemon would also compile the registry stack it imports.

Where our time goes (a two-core machine, traced in the daemon; a typical
0.85-0.95 s cold pull of ours in session 7, times from the ``ctr`` start):

- 0.02-0.12 s the first transfer's imports (then httpx and the resolver,
  60-90 ms of CPU; since session 8 the resolver alone, about 20 ms; a warm
  daemon skips them). A pull's requests are all reads, which the registry
  client serves on its own connections (``pycontainerd.remotes._client``),
  so httpx, httpcore, h11 and anyio are never imported;
- 0.12-0.21 s resolving, the manifest, the config and the bottom layer;
- downloads end at about 0.5 s: a blob's body is read, hashed and written by
  a thread on a blocking socket;
- the 5 000-file layer is applied by the applier process
  (``pycontainerd.snapshots.applyworker``) in 0.25-0.4 s for its 0.2 s of
  CPU: until the downloads end, the two cores also serve them and the
  registry;
- the 18 filler layers then take about 13.5 ms each: 10 ms to apply a
  4.7 MB layer (its digest beside its inflate and write) and 3.5 ms of
  snapshot steps and the round trip to the applier.

Before session 6 the same pull was 1.68x containerd 2.1's: the downloads
went through httpx on the event loop and the layers were applied in a
thread of the daemon, the 5 000-file layer taking 0.7 s of wall time for its
0.14 s of CPU. Session 7 took httpcore off the pull path and had the applier
process keep the memory it frees: a fresh process's small heap mapped and
page-faulted every megabyte buffer again for each layer, so a filler layer
took 17-19 ms there. Tried and dropped: downloads at a lower thread
priority, and holding the downloads at most a few layers ahead of the
applies (no gain beyond the noise). Session 8 took httpx off the pull path
and sent a blob's first ``downloading`` event only once it has been moving
for 300 ms, as upstream's ticker does (71 events to 50; each costs a grpcio
client about 300 µs of CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import _harness
import images  # the sibling modules: a script's own directory is on sys.path
from _harness import Peer, Row, containerd_peer, print_table, pycontainerd_peer, running


def _warm_pull(peer: Peer, warm_ref: str, ref: str) -> float | None:
    """``ref``'s Transfer pull after a first one of ``warm_ref`` on the same daemon."""
    if _pull(peer, warm_ref) is None:
        return None
    return _pull(peer, ref)


def _pull(peer: Peer, ref: str, *extra: str) -> float | None:
    t0 = time.monotonic()
    res = peer.ctr("images", "pull", "--plain-http", *extra, ref, timeout="300s")
    elapsed = time.monotonic() - t0
    if res.returncode != 0:
        print(f"  {peer.name}: pull failed: {res.stderr.decode().strip()[-300:]}")
        return None
    return elapsed


async def _library_pulls(
    address: str, warm_ref: str, ref: str, order: tuple[bool, ...]
) -> list[float]:
    """Library Transfer pulls of ``ref`` on one daemon, with a progress stream or not, in ``order``.

    An untimed pull of ``warm_ref`` comes first (the imports are done); after
    each timed pull the image is removed and collected (``sync``), so the
    next one downloads and applies everything again on the same daemon.
    """
    from pycontainerd.client.client import Client
    from pycontainerd.client.transfer import ImageStore, OCIRegistry, Progress
    from pycontainerd.core import platforms

    events: list[Progress] = []
    times = []
    async with Client(address, "default") as client:
        for name, progress in [(warm_ref, False), *((ref, p) for p in order)]:
            t0 = time.monotonic()
            await client.transfer(
                OCIRegistry(name, default_scheme="http"),
                ImageStore(name, unpacks=[(platforms.host(), "")]),
                progress=events.append if progress else None,
            )
            times.append(time.monotonic() - t0)
            await client.image_store().delete(name, sync=True)
    return times[1:]


#: Pairs of library pulls (with and without progress) per run: one pull varies by
#: about 10 % from the next on this machine, so a median of few pairs wanders by
#: several per cent (27 pairs, at ``--runs 9``, gave -3.0 to +3.5 % over five
#: runs; the spread of a median shrinks with the square root of the count).
PAIRS = 8


def _pair(with_first: bool) -> tuple[bool, bool]:
    return (True, False) if with_first else (False, True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--ctr", required=True, help="containerd 2.x's ctr binary")
    parser.add_argument("--containerd", required=True, help="containerd 2.x's daemon binary")
    parser.add_argument("--runs", type=int, default=5, help="cold pulls per daemon and metric")
    args = parser.parse_args()
    for binary in (args.ctr, args.containerd, images.REGISTRY_BIN):
        if not os.access(binary, os.X_OK):
            print(f"bench: {binary} is not executable", file=sys.stderr)
            return 1
    if os.geteuid() != 0:
        print("bench: needs root (unpacking mounts snapshots)", file=sys.stderr)
        return 1
    _harness.CTR = args.ctr
    _harness.GO_CONTAINERD = args.containerd
    _harness.bytecode_on()  # the registry stack is imported by the first pull
    big = next(i for i in images.build_images() if i.repo == "bench/big")
    warm = images.single("bench/warm", [images.filler_layer(99, 64 * 1024)])
    samples: dict[tuple[str, str], list[float]] = {}
    with images.Registry() as registry:
        ref, warm_ref = images.seed(registry, [big, warm])
        theirs, ours = containerd_peer(), pycontainerd_peer()
        for run in range(args.runs):
            pulls = {
                "transfer": lambda p: _pull(p, ref),
                "warm": lambda p: _warm_pull(p, warm_ref, ref),
                "local": lambda p: _pull(p, ref, "--local"),
            }
            for metric, pull in pulls.items():
                for peer in (theirs, ours):
                    with running(peer):
                        value = pull(peer)
                    if value is not None:
                        samples.setdefault((metric, peer.name), []).append(value)
            # both kinds on one daemon, PAIRS pairs in alternating order: a pair shares the
            # daemon's state and the machine's moment
            first = run % 2 == 0
            order = tuple(k for i in range(PAIRS) for k in _pair(first ^ (i % 2 == 1)))
            with running(ours):
                times = asyncio.run(_library_pulls(ours.address, warm_ref, ref, order))
            for i in range(PAIRS):
                paired = dict(zip(order[2 * i : 2 * i + 2], times[2 * i : 2 * i + 2], strict=True))
                samples.setdefault(("progress=True", ours.name), []).append(paired[True])
                samples.setdefault(("progress=False", ours.name), []).append(paired[False])
                ratio = paired[True] / paired[False]
                samples.setdefault(("progress ratio", ours.name), []).append(ratio)
            print(".", end="", flush=True)
    print()

    def median(key: tuple[str, str]) -> float | None:
        values = samples.get(key)
        return statistics.median(values) if values else None

    ratio = median(("progress ratio", ours.name))
    overhead = (ratio - 1) * 100 if ratio else None
    print_table(
        [
            Row(
                "transfer_pull_big_s",
                median(("transfer", theirs.name)),
                median(("transfer", ours.name)),
                "<= 1.0x",
            ),
            Row(
                "transfer_pull_big_warm_s",
                median(("warm", theirs.name)),
                median(("warm", ours.name)),
                "",
            ),
            Row(
                "local_pull_big_s",
                median(("local", theirs.name)),
                median(("local", ours.name)),
                "",
            ),
        ]
    )
    if overhead is not None:
        pairs = len(samples.get(("progress ratio", ours.name), []))
        print(
            f"progress_overhead_pct (pycontainerd, library pull): {overhead:+.1f} %  (<= 2 %)"
            f"  median of {pairs} pairs"
        )
    print(f"runs: {args.runs}; binaries: {Path(args.ctr).name}, {Path(args.containerd).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
