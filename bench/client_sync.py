"""What the sync twin of the client costs over the async client.

    uv run python bench/client_sync.py [--calls 1000] [--rounds 7] [--imports 15]

1. ``version()`` loop: ``--calls`` calls with the async client
   (``await client.version()`` in one coroutine) and with the sync twin
   (``client.version()`` from the main thread: one unary call on the twin's
   blocking channel, in that thread), against containerd and against our
   daemon.
   Rounds alternate async and sync; the median round is reported, as wall
   time and as this process's CPU time (all threads: the client's own cost,
   which a machine busy with other work does not distort). Target: sync
   <= 1.05x async.
2. Import time: ``import pycontainerd.client.client`` (the async client)
   against ``import pycontainerd.client.sync``, each in a fresh interpreter,
   timed inside it (interpreter start-up excluded), as wall and CPU time;
   median of ``--imports``, alternating. Target: sync <= 1.10x async.
   The interpreters cache their bytecode (``bytecode_on``), as installed
   packages have theirs, so compiling is not measured.

A benchmark, never a test: it prints and exits 0 unless a daemon fails to start.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time

from _harness import bytecode_on, check_binaries, peers, running

IMPORT_PROBE = (
    "import time; t0, c0 = time.perf_counter(), time.process_time(); import {module}; "
    "print(time.perf_counter() - t0, time.process_time() - c0)"
)


def async_loop(address: str, calls: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``calls`` awaited ``version()`` calls."""
    from pycontainerd.client.client import Client

    async def main() -> tuple[float, float]:
        async with Client(address, "default") as client:
            await client.version()  # warm: channel and stubs
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await client.version()
            return time.perf_counter() - t0, time.process_time() - c0

    return asyncio.run(main())


def sync_loop(address: str, calls: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``calls`` blocking ``version()`` calls."""
    from pycontainerd.client.sync import Client

    with Client(address, "default") as client:
        client.version()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            client.version()
        return time.perf_counter() - t0, time.process_time() - c0


def import_seconds(module: str) -> tuple[float, float]:
    """Wall and CPU seconds of importing ``module`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE.format(module=module)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wall, cpu = out.split()
    return float(wall), float(cpu)


def row(name: str, a: float, s: float, target: float) -> str:
    ratio = s / a
    ok = "yes" if ratio <= target else "NO"
    return f"{name:<38}{a:>10.4f}{s:>10.4f}{ratio:>8.3f}{f'<= {target:.2f}x':>10}  {ok}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--imports", type=int, default=15)
    args = parser.parse_args()
    bytecode_on()
    lines = []
    why = check_binaries()
    for peer in peers():
        if why and peer.name == "containerd":
            print(why)
            continue
        with running(peer):
            a_runs, s_runs = [], []
            for _ in range(args.rounds):
                a_runs.append(async_loop(peer.address, args.calls))
                s_runs.append(sync_loop(peer.address, args.calls))
            for i, kind in ((0, "wall"), (1, "cpu")):
                a = statistics.median(r[i] for r in a_runs)
                s = statistics.median(r[i] for r in s_runs)
                lines.append(row(f"version_x{args.calls}_{kind}_s ({peer.name})", a, s, 1.05))
    a_imp, s_imp = [], []
    for _ in range(args.imports):
        a_imp.append(import_seconds("pycontainerd.client.client"))
        s_imp.append(import_seconds("pycontainerd.client.sync"))
    for i, kind in ((0, "wall"), (1, "cpu")):
        a = statistics.median(r[i] for r in a_imp)
        s = statistics.median(r[i] for r in s_imp)
        lines.append(row(f"import_{kind}_s", a, s, 1.10))
    print(f"{'metric':<38}{'async':>10}{'sync':>10}{'ratio':>8}{'target':>10}  ok")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
