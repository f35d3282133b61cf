"""containerd and pycontainerd side by side, driven by the same Go ``ctr``.

Starts each daemon on its own root, state and socket under a tmpfs
(``/dev/shm`` when present), measures, prints one row per metric with both
values and the ratio (ours / containerd's). A benchmark, not a test: it never
fails on a slow number, only on a daemon that does not come up.

    uv run python bench/daemons.py [--runs N] [--calls N]

Metrics (more are added by later subsystems through ``METRICS``):

- ``start_to_version_s``: process spawn until the first ``ctr version`` succeeds
  (polled with ``ctr`` itself, so both daemons pay the same client cost);
- ``ctr_version_ms``: median wall time of ``ctr version`` against a booted daemon;
- ``idle_rss_mib``: resident memory two seconds after boot;
- ``idle_tree_rss_mib``: the same for the daemon and every process below it
  (pycontainerd keeps a layer applier process; containerd has none at idle);
- ``pull_<image>_s``: ``ctr images pull --plain-http`` of each image that
  ``images.py`` builds and seeds into a local docker-registry (``n/a`` when a
  daemon cannot do it yet).

containerd runs with a generated ``version = 2`` config that disables its CRI
plugin (we have none), so both serve the same kind of API surface.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable

import images  # the sibling module: a script's own directory is on sys.path
from _harness import Peer, fmt, parse_args, peers, running

Metric = Callable[[Peer, argparse.Namespace], "float | None"]


def start_to_version_s(peer: Peer, args: argparse.Namespace) -> float:
    samples = []
    for _ in range(args.runs):
        with running(peer) as elapsed:
            samples.append(elapsed)
    return statistics.median(samples)


def ctr_version_ms(peer: Peer, args: argparse.Namespace) -> float:
    with running(peer):
        for _ in range(3):
            peer.ctr("version")
        samples = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            res = peer.ctr("version")
            samples.append((time.perf_counter() - t0) * 1000)
            if res.returncode != 0:
                raise RuntimeError(res.stderr.decode())
        return statistics.median(samples)


def idle_rss_mib(peer: Peer, args: argparse.Namespace) -> float:
    with running(peer):
        time.sleep(2.0)
        return peer.rss_mib()


def idle_tree_rss_mib(peer: Peer, args: argparse.Namespace) -> float:
    with running(peer):
        time.sleep(2.0)
        return peer.tree_rss_mib()


def pull(which: str) -> Metric:
    """``ctr images pull --plain-http`` (with unpack) of a seeded image, in seconds."""

    def metric(peer: Peer, args: argparse.Namespace) -> float | None:
        ref = next((r for r in args.refs if f"/bench/{which}:" in r), None)
        if ref is None:
            return None
        with running(peer):
            t0 = time.monotonic()
            res = peer.ctr("images", "pull", "--plain-http", ref)
            if res.returncode != 0:
                print(f"  {peer.name}: pull {which} failed: {res.stderr.decode().strip()}")
                return None
            return time.monotonic() - t0

    return metric


METRICS: dict[str, Metric] = {
    "start_to_version_s": start_to_version_s,
    "ctr_version_ms": ctr_version_ms,
    "idle_rss_mib": idle_rss_mib,
    "idle_tree_rss_mib": idle_tree_rss_mib,
    "pull_busybox_s": pull("busybox"),
    "pull_big_s": pull("big"),
    "pull_multi_s": pull("multi"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="daemon starts per start metric")
    parser.add_argument("--calls", type=int, default=20, help="calls per round-trip metric")
    parser.add_argument("metrics", nargs="*", default=list(METRICS), help="metrics to run")
    args = parse_args(parser)
    if args is None:
        return 1
    both = peers()
    with contextlib.ExitStack() as stack:
        args.refs = []
        if any(m.startswith("pull_") for m in args.metrics):
            if images.registry_available():
                registry = stack.enter_context(images.Registry())
                args.refs = images.seed(registry)
            else:
                print(f"bench: {images.REGISTRY_BIN} missing: pull metrics skipped")
        print(f"{'metric':<22}{'containerd':>14}{'pycontainerd':>14}{'ratio':>8}")
        for name in args.metrics:
            metric = METRICS[name]
            theirs, ours = (metric(peer, args) for peer in both)
            print(f"{name:<22}{fmt(theirs):>14}{fmt(ours):>14}{_ratio(ours, theirs):>8}")
    return 0


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.2f}"


if __name__ == "__main__":
    sys.exit(main())
