"""Our ``ctr`` against the Go ``ctr``: a cold image pull, the client's memory, start-up time.

Each side uses its own client against its own daemon: the Go ``ctr`` against
containerd, our ``ctr`` (the venv's console script) against pycontainerd. Each
daemon gets a fresh root on tmpfs per pull (cold), and both pull ``bench/big``
(20 layers, ~86 MB) from the same local ``docker-registry``. A benchmark, not
a test: a slow number never fails it.

    uv run python bench/ctr_cli.py [--runs N] [--calls N]

Metrics:

- ``ctr_pull_big_s``: median wall time of ``ctr images pull --plain-http`` (fetch
  and unpack into overlayfs), stdout to a pipe;
- ``ctr_pull_peak_rss_mib``: the client process's peak RSS during that pull
  (its ``VmHWM``, polled; the daemon is not counted);
- ``ctr_pull_client_cpu_s`` / ``ctr_pull_daemon_cpu_s``: CPU seconds (user + system)
  the client and the daemon spent on that pull: where the pull's time goes;
- ``ctr_help_ms`` / ``ctr_version_ms``: median wall time of ``ctr --help`` and
  of ``ctr version`` against a running daemon.

After the table, a breakdown of where our ``ctr version`` spends its time:
the bare interpreter, then the slowest imports (``python -X importtime``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import images  # the sibling modules: a script's own directory is on sys.path
from _harness import CTR, Peer, Row, parse_args, peers, print_table, running

OUR_CTR = str(Path(sys.executable).parent / "ctr")

#: Clients run with bytecode caching on: a shell with ``PYTHONDONTWRITEBYTECODE=1``
#: would make every ``ctr`` recompile ~140 modules (~0.7 s), which no installed
#: ``ctr`` does. The warm-up calls write the caches.
CLIENT_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def client_command(peer: Peer, *args: str) -> list[str]:
    """The peer's own ``ctr``: the Go one for containerd, ours for pycontainerd."""
    binary = CTR if peer.name == "containerd" else OUR_CTR
    return [binary, "-a", peer.address, *args]


def _hwm_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def run_measured(cmd: list[str]) -> tuple[float, float, int, bytes]:
    """Run ``cmd``; return wall seconds, peak RSS in MiB, exit status and stderr.

    The peak is the exec'd program's ``VmHWM``, polled every 5 ms until it exits
    (``wait4``'s ``ru_maxrss`` would include this big parent's RSS inherited at fork).
    """
    with tempfile.TemporaryFile() as errfile:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errfile, env=CLIENT_ENV)
        peak = 0.0
        while proc.poll() is None:
            value = _hwm_mib(proc.pid)
            if value is not None:
                peak = max(peak, value)
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        errfile.seek(0)
        return elapsed, peak, proc.returncode, errfile.read()


def pulls(peer: Peer, ref: str, runs: int) -> dict[str, float | None]:
    times, rss, client_cpu, daemon_cpu = [], [], [], []
    for _ in range(runs):
        with running(peer):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            d0 = peer.cpu_s()
            elapsed, peak, code, err = run_measured(
                client_command(peer, "images", "pull", "--plain-http", ref)
            )
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            daemon_cpu.append(peer.cpu_s() - d0)
        if code != 0:
            print(f"  {peer.name}: pull failed: {err.decode(errors='replace').strip()}")
            return dict.fromkeys(("pull", "rss", "client_cpu", "daemon_cpu"))
        times.append(elapsed)
        rss.append(peak)
        client_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return {
        "pull": statistics.median(times),
        "rss": max(rss),
        "client_cpu": statistics.median(client_cpu),
        "daemon_cpu": statistics.median(daemon_cpu),
    }


def startup(peer: Peer, calls: int) -> dict[str, float | None]:
    helps, versions = [], []
    with running(peer):
        for i in range(calls + 2):
            h, _, code_h, _ = run_measured(client_command(peer, "--help"))
            v, _, code_v, err = run_measured(client_command(peer, "version"))
            if code_h or code_v:
                print(f"  {peer.name}: ctr failed: {err.decode(errors='replace').strip()}")
                return {"help": None, "version": None}
            if i >= 2:  # warm the page cache first
                helps.append(h * 1000)
                versions.append(v * 1000)
    return {"help": statistics.median(helps), "version": statistics.median(versions)}


def where_the_time_goes(peer: Peer) -> None:
    """Print the bare interpreter's start-up and the slowest imports of ``ctr version``."""
    bare = statistics.median(
        run_measured([sys.executable, "-S", "-c", "pass"])[0] * 1000 for _ in range(7)
    )
    site = statistics.median(
        run_measured([sys.executable, "-c", "pass"])[0] * 1000 for _ in range(7)
    )
    with running(peer):
        code = (
            "import sys; from pycontainerd.ctr.main import main; "
            f"sys.argv = ['ctr', '-a', {peer.address!r}, 'version']; main()"
        )
        res = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            check=False,
            env=CLIENT_ENV,
        )
    rows = []
    for line in res.stderr.decode(errors="replace").splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        head, cumulative, name = line.split("|", 2)
        rows.append((int(cumulative), int(head.split(":")[1]), name))
    # a top-level import has one space before its name; nested ones are indented further
    top_level = [r for r in rows if not r[2].startswith("  ")]
    total_imports = sum(r[0] for r in top_level) / 1000
    print()
    print("where our `ctr version` spends its time:")
    print(f"  interpreter start (python -S -c pass)      {bare:7.1f} ms")
    print(f"  + site / venv .pth files (python -c pass)  {site:7.1f} ms")
    print(f"  imports, top level (cumulative)            {total_imports:7.1f} ms")
    for total_us, _, module in sorted(top_level, reverse=True)[:8]:
        print(f"    {module.strip():<40} {total_us / 1000:7.1f} ms")
    print("  the rest: the gRPC channel connect, two unary calls, printing")
    print(f"  (load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="cold pulls per side")
    parser.add_argument("--calls", type=int, default=10, help="--help/version calls per side")
    args = parse_args(parser, images.REGISTRY_BIN)
    if args is None:
        return 1
    if not os.access(OUR_CTR, os.X_OK):
        print(f"bench: our ctr console script is missing ({OUR_CTR})", file=sys.stderr)
        return 1
    subprocess.run([OUR_CTR, "--help"], env=CLIENT_ENV, capture_output=True, check=False)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", *map(str, Path("packages").glob("*/src"))],
        env=CLIENT_ENV,
        capture_output=True,
        check=False,
    )
    big = next(i for i in images.build_images() if i.repo == "bench/big")
    rows: list[Row] = []
    with images.Registry() as registry:
        (ref,) = images.seed(registry, [big])
        theirs, ours = (pulls(p, ref, args.runs) for p in peers())
        rows.append(Row("ctr_pull_big_s", theirs["pull"], ours["pull"], "<= 1.3x"))
        rows.append(Row("ctr_pull_peak_rss_mib", theirs["rss"], ours["rss"], "<= 100"))
        rows.append(Row("ctr_pull_client_cpu_s", theirs["client_cpu"], ours["client_cpu"]))
        rows.append(Row("ctr_pull_daemon_cpu_s", theirs["daemon_cpu"], ours["daemon_cpu"]))
        print("  measured pulls", flush=True)
    theirs, ours = (startup(p, args.calls) for p in peers())
    rows.append(Row("ctr_help_ms", theirs["help"], ours["help"], "<= 150"))
    rows.append(Row("ctr_version_ms", theirs["version"], ours["version"], "<= 250"))
    print_table(rows)
    where_the_time_goes(peers()[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
