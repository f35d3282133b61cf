"""The CRI, side by side: pod and container lifecycle latency, daemon RSS with many pods.

Both daemons run on the critest harness (``tools/cri_harness.py``: the
stand-in images in a docker-registry on 127.0.0.1, a CNI bridge per daemon,
the same CRI config), at the same time, and are driven through our generated
CRI stubs. A benchmark, not a test: it never fails on a slow number. Needs
root, runc, docker-registry, Debian's CNI plugins and gcc.

    uv run python bench/cri.py [--runs N] [--pods N]

Metrics (``ratio`` = pycontainerd / containerd), runs interleaved:

- ``pod_lifecycle_ms``: median of RunPodSandbox + StopPodSandbox +
  RemovePodSandbox (the pause image already pulled; CNI bridge networking);
- ``container_lifecycle_ms``: median of CreateContainer + StartContainer +
  StopContainer (timeout 0) + RemoveContainer of a busybox ``sleep`` in a
  running pod;
- ``daemon_rss_<N>_pods_mib``: the daemon's RSS with ``--pods`` pods running
  (shims not counted: each side has its own shim model).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import Row, bytecode_on, print_table  # the script's own directory is on sys.path

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "cri_harness.py"
BUSYBOX = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
PAUSE = "registry.k8s.io/pause:3.6"


def _harness_module() -> Any:
    spec = importlib.util.spec_from_file_location("cri_harness", TOOLS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cri_harness"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class Side:
    """One daemon's CRI stubs."""

    def __init__(self, name: str, sock: Path) -> None:
        import grpc

        from pycontainerd.api.cri.v1 import api_pb2_grpc as pb_grpc

        self.name = name
        self.channel = grpc.insecure_channel(f"unix://{sock}")
        self.rt = pb_grpc.RuntimeServiceStub(self.channel)
        self.images = pb_grpc.ImageServiceStub(self.channel)
        self.pid = int((sock.parent / "daemon.pid").read_text())
        self.count = 0

    def pod_config(self) -> Any:
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        self.count += 1
        name = f"bench-{self.count}"
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="bench"),
            hostname=name,
        )

    def run_pod(self) -> tuple[str, Any]:
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        config = self.pod_config()
        sid = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=120)
        return str(sid.pod_sandbox_id), config

    def remove_pod(self, sid: str) -> None:
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=120)
        self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=120)

    def container_cycle(self, sid: str, pod: Any) -> None:
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        self.count += 1
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=f"c{self.count}"),
            image=pb.ImageSpec(image=BUSYBOX),
            command=["sleep", "1000"],
        )
        cid = self.rt.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod),
            timeout=120,
        ).container_id
        self.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=120)
        self.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=120)
        self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=120)

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def _ms(fn: Any, *args: Any) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--pods", type=int, default=50)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/cri.py: needs root", file=sys.stderr)
        return 0
    bytecode_on()  # every pod starts a shim: no compiling on each start
    h = _harness_module()
    from pycontainerd.api.cri.v1 import api_pb2 as pb

    cache = Path(tempfile.gettempdir()) / "cri-harness-cache"
    with contextlib.ExitStack() as stack:
        sides: list[Side] = []
        for kind in ("containerd", "pycontainerd"):
            base = Path(tempfile.mkdtemp(prefix=f"cribench-{kind[:2]}-", dir="/tmp"))
            stack.callback(shutil.rmtree, base, True)
            sock = stack.enter_context(h.harness(kind, base, cache))
            sides.append(Side(kind, sock))
        for side in sides:
            for ref in (PAUSE, BUSYBOX):
                side.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)))
        # warm up: one pod and one container each
        keep = {}
        for side in sides:
            sid, pod = side.run_pod()
            side.container_cycle(sid, pod)
            keep[side.name] = (sid, pod)
            side.remove_pod(side.run_pod()[0])
        pods: dict[str, list[float]] = {s.name: [] for s in sides}
        ctrs: dict[str, list[float]] = {s.name: [] for s in sides}
        for i in range(opts.runs):
            for side in sides if i % 2 == 0 else reversed(sides):

                def pod_cycle(s: Side = side) -> None:
                    s.remove_pod(s.run_pod()[0])

                pods[side.name].append(_ms(pod_cycle))
                ctrs[side.name].append(_ms(side.container_cycle, *keep[side.name]))
        running: dict[str, list[str]] = {s.name: [] for s in sides}
        for _ in range(opts.pods):
            for side in sides:
                running[side.name].append(side.run_pod()[0])
        time.sleep(2)
        rss = {s.name: s.rss_mib() for s in sides}
        for side in sides:
            for sid in [*running[side.name], keep[side.name][0]]:
                side.remove_pod(sid)
            side.channel.close()
    rows = [
        Row(
            "pod_lifecycle_ms",
            statistics.median(pods["containerd"]),
            statistics.median(pods["pycontainerd"]),
            "<= 1.0x",
        ),
        Row(
            "container_lifecycle_ms",
            statistics.median(ctrs["containerd"]),
            statistics.median(ctrs["pycontainerd"]),
            "<= 1.0x",
        ),
        Row(
            f"daemon_rss_{opts.pods}_pods_mib",
            rss["containerd"],
            rss["pycontainerd"],
            "<= 1.5x",
        ),
    ]
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
