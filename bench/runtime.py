"""Running containers, side by side: ``ctr run --rm`` wall time, shim memory, shim start.

Both daemons run on tmpfs (see ``_harness``) and are driven by the Go ``ctr``.
A benchmark, not a test: it never fails on a slow number. Needs root, ``runc``
and ``/bin/busybox`` (Debian ``busybox-static``) for the container's rootfs.

    uv run python bench/runtime.py [--runs N] [--containers N] [--starts N] [--no-image]

Metrics (``ratio`` = pycontainerd / containerd):

- ``run_rm_rootfs_ms``: median wall time of
  ``ctr run --rm --rootfs DIR id /bin/true`` (a busybox directory, no
  snapshot): containerd with its Go shim against our daemon with our shim;
- ``run_rm_rootfs_goshim_ms``: the same, our daemon with ``io.containerd.runc.v2``
  mapped to containerd's Go shim: what our daemon costs without our shim;
- ``run_rm_new_ns_ms``: the same, each run in a namespace of its own, so our
  daemon starts a new shim every time (the Go shim always does);
- ``run_rm_image_ms``: ``ctr run --rm IMAGE id /bin/true`` of a one-layer busybox
  image imported into both daemons (overlayfs snapshots);
- ``run_rm_image_goshim_ms``: the same with the Go shim mapped;
- ``shim_rss_per_ctr_mib`` / ``shim_pss_per_ctr_mib``: the shims' RSS and PSS
  (``/proc/<pid>/smaps_rollup``) summed over every shim process serving
  ``--containers`` sleeping containers, divided by the number of containers
  (one Go shim per container; ours serves a namespace from one process);
- ``shim_procs``: how many shim processes serve those containers;
- ``shim_ready_ms``: median time from spawning ``<shim> ... start`` in a fresh
  bundle until the first ttrpc call to the address it printed (``Connect``)
  answers: the Go ``containerd-shim-runc-v2`` against ``containerd-shim-pyrunc-v2``.

The first runs of each side warm up (our shim lingers two seconds after its last
task, so later runs reuse a running shim, which is the common case).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import images  # the sibling module: a script's own directory is on sys.path
from _harness import (
    Peer,
    Row,
    containerd_peer,
    parse_args,
    print_table,
    pycontainerd_peer,
)

from pycontainerd.runtime.testing import rss_pss_kib

GO_SHIM = "/usr/bin/containerd-shim-runc-v2"
OUR_SHIM = str(Path(sys.executable).parent / "containerd-shim-pyrunc-v2")
IMAGE = "bench/busybox:latest"
GO_SHIM_CONFIG = (
    'version = 2\n[plugins."io.containerd.runtime.v2.task".shims]\n'
    '"io.containerd.runc.v2" = "containerd-shim-runc-v2"\n'
)
APPLETS = ("sh", "true", "sleep", "echo", "cat")


#: Our daemon and shims run with bytecode caching on, as installed ones do (pip
#: compiles, ``uv sync --compile-bytecode`` too): with ``PYTHONDONTWRITEBYTECODE=1``
#: and a stale cache every shim start recompiles what it imports (~4x the CPU).
BYTECODE_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def our_peer() -> Peer:
    """Our daemon (``io.containerd.runc.v2`` served by our shim)."""
    peer = pycontainerd_peer()
    peer.env = dict(BYTECODE_ENV)
    return peer


def pycontainerd_goshim_peer() -> Peer:
    """Our daemon with ``io.containerd.runc.v2`` handed to containerd's Go shim."""
    base = our_peer()

    def command(where: Path) -> list[str]:
        config = where / "config.toml"
        config.write_text(GO_SHIM_CONFIG)
        return [*base.command(where), "--config", str(config)]

    return Peer("pycontainerd+goshim", command, env=dict(BYTECODE_ENV))


def make_rootfs(path: Path) -> Path:
    """A busybox-static root filesystem."""
    (path / "bin").mkdir(parents=True)
    shutil.copy2(images.BUSYBOX, path / "bin" / "busybox")
    for name in APPLETS:
        (path / "bin" / name).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (path / d).mkdir()
    return path


def oci_archive(path: Path) -> Path:
    """An OCI image layout tar of the one-layer busybox image, named ``IMAGE``."""
    image = images.single("bench/busybox", [images.busybox_layer()])
    top = image.top
    assert top is not None
    manifest = top.descriptor(
        annotations={
            "io.containerd.image.name": IMAGE,
            "org.opencontainers.image.ref.name": "latest",
        }
    )
    index = {"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": [manifest]}
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for blob in [*image.blobs, top]:
            add(f"blobs/sha256/{blob.digest.removeprefix('sha256:')}", blob.data)
    return path


def _shim_pids(peer: Peer) -> set[int]:
    """Pids of the live shims serving ``peer``'s tasks (from the bundles' ``shim.pid``)."""
    assert peer.base is not None
    pids: set[int] = set()
    for f in (peer.base / "state").glob("io.containerd.runtime.v2.task/*/*/shim.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(f.read_text()))
    # containerd 1.6 writes no shim.pid: find its shims by their ``-id`` too.
    for bundle in (peer.base / "state").glob("io.containerd.runtime.v2.task/*/*"):
        pids.update(_pids_of(bundle.name))
    return {p for p in pids if Path(f"/proc/{p}").exists()}


def _clean(peer: Peer) -> None:
    """Kill and remove every task and container; stop shims left behind (by pid)."""
    shims = _shim_pids(peer)
    for tid in peer.ctr("tasks", "ls", "-q").stdout.decode().split():
        peer.ctr("tasks", "kill", "-s", "SIGKILL", tid)
    for tid in peer.ctr("tasks", "ls", "-q").stdout.decode().split():
        peer.ctr("tasks", "rm", "-f", tid, timeout="20s")
    for cid in peer.ctr("containers", "ls", "-q").stdout.decode().split():
        peer.ctr("containers", "rm", cid)
    peer.stop()
    for pid in shims:
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"containerd-shim" in cmdline or b"pycontainerd.runtime.shim" in cmdline:
                os.kill(pid, signal.SIGKILL)


def _timed_ctr(peer: Peer, *args: str) -> float:
    t0 = time.perf_counter()
    peer.ctr_ok(*args, timeout="60s", stdin=subprocess.DEVNULL)
    return (time.perf_counter() - t0) * 1000


def run_rm_ms(
    group: list[Peer], rootfs: Path | None, runs: int, *, new_namespace: bool = False
) -> list[float | None]:
    """Median ms of ``ctr run --rm ... /bin/true`` on each daemon of ``group``.

    The daemons run at the same time and take turns, run by run, so machine
    noise falls on all of them alike. ``rootfs`` None runs the imported image.
    ``new_namespace``: every run in a namespace of its own (a new shim for ours
    too); otherwise two warm-up runs first.
    """
    tag = uuid.uuid4().hex[:6]
    samples: list[list[float]] = [[] for _ in group]
    alive = [True] * len(group)
    try:
        for peer in group:
            peer.start()
        for i in range(runs + (0 if new_namespace else 2)):
            for n, peer in enumerate(group):
                if not alive[n]:
                    continue
                ns = ["-n", f"ns{i}"] if new_namespace else []
                if rootfs is None:
                    assert peer.base is not None
                    if i == 0 or new_namespace:
                        archive = oci_archive(peer.base / "busybox.tar")
                        peer.ctr_ok(*ns, "images", "import", str(archive))
                    source = ["--snapshotter", "overlayfs", IMAGE]
                else:
                    source = ["--rootfs", str(rootfs)]
                try:
                    ms = _timed_ctr(peer, *ns, "run", "--rm", *source, f"t{i}-{tag}", "/bin/true")
                except RuntimeError as exc:
                    print(f"  {peer.name}: {exc}", file=sys.stderr)
                    alive[n] = False
                    continue
                if new_namespace or i >= 2:
                    samples[n].append(ms)
        return [
            statistics.median(s) if ok and s else None for s, ok in zip(samples, alive, strict=True)
        ]
    finally:
        for peer in group:
            _clean(peer)


def shim_memory(peer: Peer, rootfs: Path, containers: int) -> tuple[float, float, int] | None:
    """(RSS MiB per container, PSS MiB per container, shim processes) with sleeping tasks."""
    tag = uuid.uuid4().hex[:6]
    try:
        peer.start()
        for i in range(containers):
            peer.ctr_ok(
                "run", "-d", "--rootfs", str(rootfs), f"m{i}-{tag}", "/bin/sleep", "300",
                timeout="60s", stdin=subprocess.DEVNULL,
            )  # fmt: skip
        time.sleep(1.0)  # let the shims settle (late imports, first GC)
        pids = _shim_pids(peer)
        totals = [rss_pss_kib(p) for p in pids]
        rss = sum(r for r, _ in totals) / 1024 / containers
        pss = sum(p for _, p in totals) / 1024 / containers
        return rss, pss, len(pids)
    except RuntimeError as exc:
        print(f"  {peer.name}: {exc}", file=sys.stderr)
        return None
    finally:
        _clean(peer)


# -- shim start to ttrpc ready ------------------------------------------------------------


def _ttrpc_call(path: str, method: str, payload: bytes) -> bytes | None:
    """One ``containerd.task.v2.Task`` call on the socket at ``path``.

    Returns the raw ``ttrpc.Response`` (an error answer counts: the server is
    up), or None when nothing answers.
    """
    from pycontainerd.runtime.shim import wire

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    try:
        sock.connect(path)
        sock.sendall(wire.ttrpc_request(1, "containerd.task.v2.Task", method, payload))
        return wire.read_response(sock, 1)
    except OSError:
        return None
    finally:
        sock.close()


def shim_ready_ms(shim: str, starts: int, env: dict[str, str]) -> float:
    """Median ms from spawning ``shim start`` to the first answered ttrpc ``Connect``."""
    from pycontainerd.api.runtime.task.v2 import shim_pb2

    base = Path(tempfile.mkdtemp(prefix="pcdshim", dir="/tmp"))
    state = base / "state" / "io.containerd.runtime.v2.task" / "ns"
    samples = []
    try:
        for i in range(starts + 1):
            task_id = f"ready{i}-{uuid.uuid4().hex[:6]}"
            bundle = state / task_id
            bundle.mkdir(parents=True)
            (bundle / "config.json").write_text("{}")
            # The Go shim's server writes its log to this FIFO: keep a reader on it.
            os.mkfifo(bundle / "log", 0o700)
            log_fd = os.open(bundle / "log", os.O_RDWR | os.O_NONBLOCK)
            connect = shim_pb2.ConnectRequest(id=task_id).SerializeToString()
            t0 = time.perf_counter()
            out = subprocess.run(
                [shim, "-namespace", "ns", "-address", str(base / "c.sock"), "-id", task_id,
                 "start"],
                cwd=bundle, env=env, stdin=subprocess.DEVNULL, capture_output=True, check=True,
            ).stdout.decode().strip()  # fmt: skip
            address = json.loads(out)["address"] if out.startswith("{") else out
            path = address.removeprefix("unix://")
            deadline = time.monotonic() + 10
            while _ttrpc_call(path, "Connect", connect) is None:
                if time.monotonic() > deadline:
                    msg = f"{shim}: no ttrpc answer on {path}"
                    raise RuntimeError(msg)
                time.sleep(0.0005)
            elapsed = (time.perf_counter() - t0) * 1000
            if i > 0:  # the first start warms the page cache
                samples.append(elapsed)
            shutdown = shim_pb2.ShutdownRequest(id=task_id, now=True).SerializeToString()
            _ttrpc_call(path, "Shutdown", shutdown)
            for pid in _pids_of(task_id):
                _stop_pid(pid)
            os.close(log_fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return statistics.median(samples)


def _pids_of(task_id: str) -> list[int]:
    """Shim server processes started for ``task_id`` (its ``-id`` is on their command line)."""
    wanted = f"-id\0{task_id}\0".encode()
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if wanted in (p / "cmdline").read_bytes():
                    found.append(int(p.name))
    return found


def _stop_pid(pid: int) -> None:
    deadline = time.monotonic() + 3
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# -- the table ------------------------------------------------------------------------------


def _pick(mem: tuple[float, float, int] | None, i: int) -> float | None:
    return None if mem is None else mem[i]


def rows(runs: int = 15, containers: int = 10, starts: int = 5, image: bool = True) -> list[Row]:
    """Every metric of this module as table rows."""
    work = Path(
        tempfile.mkdtemp(prefix="pcdrt", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    )
    try:
        rootfs = make_rootfs(work / "rootfs")
        out = []
        trio = [containerd_peer, our_peer, pycontainerd_goshim_peer]
        go, ours, mapped = run_rm_ms([p() for p in trio], rootfs, runs)
        out.append(Row("run_rm_rootfs_ms", go, ours, "<= 1.5x"))
        out.append(Row("run_rm_rootfs_goshim_ms", go, mapped, "", "our daemon, Go shim"))
        go, ours = run_rm_ms([p() for p in trio[:2]], rootfs, max(3, runs // 3), new_namespace=True)
        out.append(Row("run_rm_new_ns_ms", go, ours, "", "each run in a new namespace"))
        if image:
            go, ours, mapped = run_rm_ms([p() for p in trio], None, runs)
            out.append(Row("run_rm_image_ms", go, ours, "<= 1.5x"))
            out.append(Row("run_rm_image_goshim_ms", go, mapped, "", "our daemon, Go shim"))
        go_mem = shim_memory(containerd_peer(), rootfs, containers)
        our_mem = shim_memory(our_peer(), rootfs, containers)
        out.append(Row("shim_rss_per_ctr_mib", _pick(go_mem, 0), _pick(our_mem, 0), "<= 20"))
        out.append(Row("shim_pss_per_ctr_mib", _pick(go_mem, 1), _pick(our_mem, 1)))
        out.append(
            Row("shim_procs", _pick(go_mem, 2), _pick(our_mem, 2), "", f"{containers} containers")
        )
        env = dict(BYTECODE_ENV)
        out.append(
            Row(
                "shim_ready_ms",
                shim_ready_ms(GO_SHIM, starts, env),
                shim_ready_ms(OUR_SHIM, starts, env),
                "",
                "spawn start -> first ttrpc answer",
            )
        )
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15, help="timed ctr run --rm per side")
    parser.add_argument("--containers", type=int, default=10, help="sleeping containers")
    parser.add_argument("--starts", type=int, default=5, help="shim starts per side")
    parser.add_argument("--no-image", action="store_true", help="skip the image-based run")
    args = parse_args(parser)
    if args is None:
        return 1
    if os.geteuid() != 0:
        print("bench: running containers needs root", file=sys.stderr)
        return 1
    print_table(rows(args.runs, args.containers, args.starts, not args.no_image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
