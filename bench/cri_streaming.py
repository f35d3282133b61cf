"""CRI streaming, side by side: exec round trip and port-forward throughput.

Each daemon (Debian's containerd 1.6 with its CRI plugin, then ours) runs a pod
with one busybox container serving a 100 MiB file with ``httpd``, on a CNI
bridge of Debian's plugins. The same Python SPDY/3.1 client
(``pycontainerd.cri.streaming.testing``, as kubelet's executors speak it) then
measures, against each daemon's streaming server:

- ``exec_echo_ms``: median wall time of one CRI ``Exec`` call for ``echo hi``
  plus the whole SPDY session on its URL (upgrade, streams, output, exit
  status): what ``kubectl exec`` costs beyond kubelet;
- ``exec_sync_echo_ms``: the same command through ``ExecSync`` (no streaming
  server): how much of the exec time is the runtime's;
- ``portforward_100mib_mib_s``: best throughput of ``GET`` of the 100 MiB
  file through a CRI ``PortForward`` session (SPDY ``portforward.k8s.io``).

Both daemons run at the same time and every round measures each (alternating
which goes first), so a change in the machine's load hits both; medians.

A benchmark, not a test: it never fails on a slow number. Needs root, runc,
``/bin/busybox`` (busybox-static), the CNI plugins in ``/usr/lib/cni`` and
Debian's ``containerd``/``ctr``.

    uv run python bench/cri_streaming.py [--runs N]

Measured on a loaded 2-core VM (other work running), three runs: exec round
trip 0.83-0.89x containerd's (ExecSync 0.90-0.95x), port-forward 1.56-1.64x
containerd's throughput (about 50 against 31 MiB/s). The client is Python for
both daemons, so the throughput numbers are bounded by it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _harness import GO_CONTAINERD, Peer, Row, check_binaries, print_table

from pycontainerd.cri import testing
from pycontainerd.cri.streaming import testing as st

if TYPE_CHECKING:
    from collections.abc import Iterator

SHELL = "localhost/pycontainerd-bench/shell:1"
BIG_MIB = 100


def _config(base: Path, conf_dir: Path) -> Path:
    config = base / "config.toml"
    config.write_text(
        "version = 2\n"
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        f'  sandbox_image = "{testing.PAUSE_REF}"\n'
        "  restrict_oom_score_adj = true\n"
        '[plugins."io.containerd.grpc.v1.cri".cni]\n'
        f'  bin_dir = "{testing.CNI_BIN_DIR}"\n'
        f'  conf_dir = "{conf_dir}"\n'
    )
    return config


def _peer(kind: str, conf_dir: Path) -> Peer:
    def command(base: Path) -> list[str]:
        config = _config(base, conf_dir)
        daemon = (
            [GO_CONTAINERD]
            if kind == "containerd"
            else [sys.executable, "-m", "pycontainerd.daemon"]
        )
        return [
            *daemon, "--config", str(config), "--root", str(base / "root"),
            "--state", str(base / "state"), "--address", str(base / "c.sock"),
        ]  # fmt: skip

    env = dict(os.environ)
    if kind != "containerd":
        env.update(testing.daemon_path_env())
    return Peer(kind, command, env=env)


@contextlib.contextmanager
def _pod(peer: Peer) -> Iterator[tuple[Any, str, str]]:
    """A pod serving the big file on port 8080: (runtime stub, sandbox id, container id)."""
    import grpc

    from pycontainerd.api.cri.v1 import api_pb2 as pb
    from pycontainerd.api.cri.v1 import api_pb2_grpc as pb_grpc

    busybox = testing.static_busybox()
    assert peer.base is not None
    assert busybox is not None
    testing.build_pause_archive(busybox, peer.base / "pause.tar")
    testing.build_pause_archive(
        busybox, peer.base / "shell.tar", SHELL, entrypoint=(), user="",
        applets=("sh", "echo", "mkdir", "dd", "httpd", "sleep"),
    )  # fmt: skip
    for archive in ("pause.tar", "shell.tar"):
        peer.ctr_ok("-n", "k8s.io", "images", "import", str(peer.base / archive))
    ch = grpc.insecure_channel(f"unix://{peer.address}")
    rt = pb_grpc.RuntimeServiceStub(ch)
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"bench-{peer.name}", uid=peer.name, namespace="b"),
        hostname="bench",
    )
    sid = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod)).pod_sandbox_id
    try:
        script = (
            f"mkdir -p /tmp/www && dd if=/dev/zero of=/tmp/www/big bs=1048576 count={BIG_MIB} "
            "2>/dev/null && echo ok > /tmp/www/ok && exec httpd -f -p 8080 -h /tmp/www"
        )
        cid = rt.CreateContainer(
            pb.CreateContainerRequest(
                pod_sandbox_id=sid,
                config=pb.ContainerConfig(
                    metadata=pb.ContainerMetadata(name="web"),
                    image=pb.ImageSpec(image=SHELL),
                    command=["sh", "-c", script],
                ),
                sandbox_config=pod,
            )
        ).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        yield rt, sid, cid
    finally:
        with contextlib.suppress(grpc.RpcError):
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
        ch.close()


def _exec_ms(rt: Any, cid: str) -> float:
    from pycontainerd.api.cri.v1 import api_pb2 as pb

    t0 = time.perf_counter()
    url = rt.Exec(pb.ExecRequest(container_id=cid, cmd=["echo", "hi"], stdout=True)).url
    result = asyncio.run(st.spdy_exec(url, stderr=False))
    elapsed = (time.perf_counter() - t0) * 1000
    if result.stdout != b"hi\n" or result.exit_code != 0:
        raise RuntimeError(f"exec gave {result}")
    return elapsed


def _exec_sync_ms(rt: Any, cid: str) -> float:
    from pycontainerd.api.cri.v1 import api_pb2 as pb

    t0 = time.perf_counter()
    rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["echo", "hi"], timeout=10))
    return (time.perf_counter() - t0) * 1000


async def _get(url: str, path: str) -> bytes:
    c = await st.SpdyClient.connect(url, ("portforward.k8s.io",))
    try:
        await c.create_stream({"streamtype": "error", "port": "8080", "requestid": "0"})
        d = await c.create_stream({"streamtype": "data", "port": "8080", "requestid": "0"})
        # No FIN: containerd 1.6 ends the forward early when the client half-closes.
        await c.send(d, f"GET /{path} HTTP/1.0\r\n\r\n".encode())
        return await c.read_all(d)
    finally:
        await c.close()


def _forward(rt: Any, sid: str, path: str) -> tuple[float, bytes]:
    from pycontainerd.api.cri.v1 import api_pb2 as pb

    url = rt.PortForward(pb.PortForwardRequest(pod_sandbox_id=sid, port=[8080])).url
    t0 = time.perf_counter()
    data = asyncio.run(_get(url, path))
    return time.perf_counter() - t0, data


def _ready(peer: Peer, rt: Any, sid: str, cid: str) -> None:
    deadline = time.monotonic() + 60
    while b"ok" not in _forward(rt, sid, "ok")[1]:  # until httpd serves the file
        if time.monotonic() > deadline:
            raise RuntimeError(f"{peer.name}: the pod's web server never answered")
        time.sleep(0.2)
    for _ in range(3):
        _exec_ms(rt, cid)


def measure(pods: dict[str, tuple[Any, str, str]], runs: int) -> dict[str, dict[str, float]]:
    """Both daemons run at once; every round measures each, alternating which goes first."""
    execs: dict[str, list[float]] = {k: [] for k in pods}
    syncs: dict[str, list[float]] = {k: [] for k in pods}
    rates: dict[str, list[float]] = {k: [] for k in pods}
    order = list(pods)
    for i in range(runs):
        for kind in order if i % 2 else reversed(order):
            rt, _, cid = pods[kind]
            execs[kind].append(_exec_ms(rt, cid))
            syncs[kind].append(_exec_sync_ms(rt, cid))
    for i in range(4):
        for kind in order if i % 2 else reversed(order):
            rt, sid, _ = pods[kind]
            seconds, data = _forward(rt, sid, "big")
            if len(data) < BIG_MIB << 20:
                raise RuntimeError(f"{kind}: short download ({len(data)} bytes)")
            rates[kind].append(BIG_MIB / seconds)
    return {
        k: {
            "exec": statistics.median(execs[k]),
            "sync": statistics.median(syncs[k]),
            "forward": statistics.median(rates[k]),
        }
        for k in pods
    }


def _kill_shims(peer: Peer) -> None:
    assert peer.base is not None
    for pidfile in peer.base.glob("state/io.containerd.runtime.v2.task/*/*/shim.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="exec sessions timed per daemon")
    args = parser.parse_args()
    if (why := check_binaries()) is not None:
        print(why, file=sys.stderr)
        return 0
    with testing.cni_bridge(Path("/tmp") / f"bench-cni-{os.getpid()}" / "net.d",
                            Path("/tmp") / f"bench-cni-{os.getpid()}" / "ipam"):  # fmt: skip
        conf_dir = Path("/tmp") / f"bench-cni-{os.getpid()}" / "net.d"
        peers = [_peer(kind, conf_dir) for kind in ("containerd", "pycontainerd")]
        with contextlib.ExitStack() as stack:
            pods = {}
            for peer in peers:
                peer.start()
                stack.callback(peer.stop)
                stack.callback(_kill_shims, peer)
                pods[peer.name] = stack.enter_context(_pod(peer))
                _ready(peer, *pods[peer.name])
            results = measure(pods, args.runs)
    theirs, ours = results["containerd"], results["pycontainerd"]
    print_table(
        [
            Row("exec_echo_ms", theirs["exec"], ours["exec"], "<= 1.0x"),
            Row("exec_sync_echo_ms", theirs["sync"], ours["sync"], "", "ExecSync: no streaming"),
            Row("portforward_100mib_mib_s", theirs["forward"], ours["forward"], ">= 0.8x"),
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
