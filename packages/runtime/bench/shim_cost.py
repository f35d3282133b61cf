# ruff: noqa: INP001 - a script, not a package
"""Measure what a Python shim costs: start-up, memory, and ``ctr run --rm`` wall time.

Run as root from the repository root: ``uv run python packages/runtime/bench/shim_cost.py``.
It starts a private containerd (the Debian ``/usr/bin/containerd``) with the
pyrunc shim first on its PATH and prints, side by side with containerd's Go
``containerd-shim-runc-v2``:

- ``start`` of a new shim until its ttrpc socket answers, and ``start`` that
  reuses a running shim;
- RSS and PSS of the shim processes with N sleeping containers, one shim per
  namespace versus one per container;
- the median wall time of ``ctr run --rm ... /bin/true``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pycontainerd.runtime.testing import CTR, install_shim, make_rootfs, rss_pss_kib

N = 10
RUNS = 15


def shim_pids(pattern: bytes) -> list[int]:
    """Pids whose command line contains ``pattern``."""
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if pattern in (p / "cmdline").read_bytes():
                    out.append(int(p.name))
            except OSError:
                pass
    return out


class Daemon:
    """A private Debian containerd with the pyrunc shim on its PATH."""

    def __init__(self, env_extra: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bs", dir="/tmp"))
        (self.dir / "bin").mkdir()
        install_shim(self.dir / "bin")
        self.rootfs = make_rootfs(self.dir / "rootfs")
        d = self.dir
        (d / "config.toml").write_text(
            f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{d}/c.sock"\n'
        )
        env = {**os.environ, **env_extra, "PATH": f"{d}/bin:{os.environ['PATH']}"}
        self.proc = subprocess.Popen(
            ["/usr/bin/containerd", "--config", str(d / "config.toml")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        while not (d / "c.sock").exists():
            time.sleep(0.01)

    def ctr(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [CTR, "-a", str(self.dir / "c.sock"), *args], capture_output=True, check=False
        )

    def run(self, runtime: str, *args: str) -> float:
        n = 0
        while args[n].startswith("-"):
            n += 1
        t0 = time.perf_counter()
        res = self.ctr(
            "run", "--runtime", runtime, "--rootfs", *args[:n], str(self.rootfs), *args[n:]
        )
        if res.returncode != 0:
            raise SystemExit(res.stderr.decode())
        return time.perf_counter() - t0

    def close(self) -> None:
        for tid in self.ctr("tasks", "ls", "-q").stdout.decode().split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", tid)
        time.sleep(0.5)
        for tid in self.ctr("tasks", "ls", "-q").stdout.decode().split():
            self.ctr("tasks", "rm", "-f", tid)
        for cid in self.ctr("containers", "ls", "-q").stdout.decode().split():
            self.ctr("containers", "rm", cid)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()
        for pid in shim_pids(str(self.dir).encode()):
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def bench_run(runtime: str, env: dict[str, str]) -> float:
    """Median ms of ``ctr run --rm ... /bin/true``."""
    d = Daemon(env)
    try:
        times = [d.run(runtime, "--rm", f"r{i}", "/bin/true") for i in range(RUNS)]
    finally:
        d.close()
    return statistics.median(times) * 1000


def bench_memory(runtime: str, env: dict[str, str], pattern: bytes) -> tuple[int, int, int]:
    """Shim count, total RSS and PSS (KiB) with N sleeping containers."""
    d = Daemon(env)
    try:
        for i in range(N):
            d.run(runtime, "-d", f"m{i}", "/bin/sleep", "300")
        pids = [
            p
            for p in shim_pids(pattern)
            if str(d.dir).encode() in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        totals = [rss_pss_kib(p) for p in pids]
        return len(pids), sum(r for r, _ in totals), sum(p for _, p in totals)
    finally:
        d.close()


def bench_start() -> tuple[float, float]:
    """(new shim until ttrpc answers, start reusing a running shim), in ms."""
    root = Path(tempfile.mkdtemp(prefix="bt", dir="/tmp"))
    (root / "bin").mkdir()
    shim = str(install_shim(root / "bin"))
    started: list[int] = []
    try:

        def start(task_id: str) -> tuple[float, str]:
            bundle = root / "state" / "io.containerd.runtime.v2.task" / "ns" / task_id
            bundle.mkdir(parents=True)
            (bundle / "config.json").write_text("{}")
            t0 = time.perf_counter()
            out = subprocess.run(
                [
                    shim,
                    "-namespace",
                    "ns",
                    "-address",
                    f"{root}/c.sock",
                    "-id",
                    task_id,
                    "start",
                ],
                cwd=bundle,
                capture_output=True,
                check=True,
            ).stdout.decode()
            started.append(int((bundle / "shim.pid").read_text()))
            return t0, out

        t0, address = start("first")
        # Ready = a Reserve round trip answers (the server accepted and replied).
        from pycontainerd.runtime.shim import bootstrap

        while bootstrap._reserve(address.removeprefix("unix://"), "probe") is None:
            time.sleep(0.001)
        ready = time.perf_counter() - t0
        reuse = []
        for i in range(5):
            t1, _ = start(f"again{i}")
            reuse.append(time.perf_counter() - t1)
        return ready * 1000, statistics.median(reuse) * 1000
    finally:
        for pid in set(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    """Print the measurements."""
    if os.geteuid() != 0:
        print("run as root", file=sys.stderr)
        return 1
    # Measure an installed shim: with a bytecode cache (pip writes one; uv
    # needs --compile-bytecode). Without one every start recompiles sources.
    if "--no-bytecode" not in sys.argv:
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ.setdefault(
            "PYTHONPYCACHEPREFIX", os.path.join(tempfile.gettempdir(), "pyc-shim")
        )
        subprocess.run(
            [sys.executable, "-c", "import pycontainerd.runtime.shim.server"], check=True
        )
    ready, reuse = bench_start()
    print(f"pyrunc: new shim start -> ttrpc ready   {ready:7.1f} ms")
    print(f"pyrunc: start reusing a running shim    {reuse:7.1f} ms")
    go = bench_run("io.containerd.runc.v2", {})
    ns = bench_run("io.containerd.pyrunc.v2", {})
    per = bench_run("io.containerd.pyrunc.v2", {"PYCONTAINERD_SHIM_GROUPING": "container"})
    print(
        f"ctr run --rm /bin/true (median of {RUNS}): Go shim {go:.0f} ms, "
        f"pyrunc per namespace {ns:.0f} ms, pyrunc per container {per:.0f} ms"
    )
    for label, runtime, env, pat in (
        ("Go shim (per container)", "io.containerd.runc.v2", {}, b"containerd-shim-runc-v2"),
        ("pyrunc per namespace", "io.containerd.pyrunc.v2", {}, b"pycontainerd.runtime.shim"),
        (
            "pyrunc per container",
            "io.containerd.pyrunc.v2",
            {"PYCONTAINERD_SHIM_GROUPING": "container"},
            b"pycontainerd.runtime.shim",
        ),
    ):
        n, rss, pss = bench_memory(runtime, env, pat)
        mem = f"RSS {rss / 1024:.1f} MiB, PSS {pss / 1024:.1f} MiB"
        print(f"{N} sleeping containers, {label}: {n} shim(s), {mem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
