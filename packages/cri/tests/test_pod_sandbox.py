"""Pod sandboxes on our daemon with real runc, overlayfs and Debian's CNI bridge plugin.

Run, status (pod IP from the bridge's subnet, inside the pinned namespace),
list with filters, the duplicate-name error, stop and remove (idempotent),
hostNetwork, a missing CNI config and a failing CNI plugin (nothing left
behind).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.cri import testing

if TYPE_CHECKING:
    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]


def _k8s_containers(cri: Cri) -> list[str]:
    out = cri.daemon.ctr("-n", "k8s.io", "containers", "ls", "-q").stdout
    return out.split()


def _k8s_tasks(cri: Cri) -> str:
    return cri.daemon.ctr("-n", "k8s.io", "tasks", "ls").stdout


def _error(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(request)  # type: ignore[operator]
    return info.value


def test_pod_sandbox_lifecycle_with_networking(cri: Cri) -> None:
    sid = cri.run(cri.pod_config("web"))

    st = cri.status(sid, verbose=True)
    assert st.status.id == sid
    assert st.status.state == pb.SANDBOX_READY
    assert st.status.metadata.name == f"web-{cri.tag}"
    assert st.status.labels["app"] == "web"
    assert st.status.linux.namespaces.options.network == pb.POD
    ip = ipaddress.ip_address(st.status.network.ip)
    assert ip in ipaddress.ip_network(cri.subnet)
    info = json.loads(st.info["info"])
    assert info["pid"] > 0
    # The pause process runs in a cgroup of its own, named after the sandbox.
    assert sid in Path(f"/proc/{info['pid']}/cgroup").read_text()
    netns = info["netNamespacePath"]
    assert [str(p) for p in testing.netns_files(cri.daemon.state)] == [netns]
    # The address is on eth0 inside the pinned namespace, and reachable from the host.
    inside = subprocess.run(
        ["nsenter", f"--net={netns}", "ip", "-4", "-o", "addr", "show", "eth0"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"inet {ip}/" in inside
    busybox = testing.static_busybox()
    assert busybox is not None
    ping = subprocess.run(
        [str(busybox), "ping", "-c", "1", "-W", "5", str(ip)], capture_output=True, check=False
    )
    assert ping.returncode == 0, ping.stdout
    # The pause container is a task of namespace k8s.io.
    assert sid in _k8s_containers(cri)
    assert sid in _k8s_tasks(cri)

    # The same name again: upstream's reservation error.
    err = _error(cri.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cri.pod_config("web")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    name = f"web-{cri.tag}_ns_{cri.tag}_0"
    assert f'failed to reserve sandbox name "{name}": name "{name}" is reserved for "{sid}"' in (
        err.details() or ""
    )

    # Filters: label, id prefix, state.
    other = cri.run(cri.pod_config("db"))

    def listed(f: pb.PodSandboxFilter) -> list[str]:
        return sorted(
            s.id for s in cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=f)).items
        )

    assert listed(pb.PodSandboxFilter(label_selector={"tag": cri.tag})) == sorted([sid, other])
    assert listed(pb.PodSandboxFilter(label_selector={"app": "db", "tag": cri.tag})) == [other]
    assert listed(pb.PodSandboxFilter(id=sid[:12])) == [sid]
    ready = pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
    assert listed(ready) == sorted([sid, other])

    # Stop: not ready, no IP, namespace gone; twice is fine.
    for _ in range(2):
        cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    st = cri.status(sid)
    assert st.status.state == pb.SANDBOX_NOTREADY
    assert st.status.network.ip == ""
    assert str(netns) not in [str(p) for p in testing.netns_files(cri.daemon.state)]
    assert sid not in _k8s_tasks(cri)
    assert listed(ready) == [other]
    notready = pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY))
    assert listed(notready) == [sid]

    # Remove: gone from the list and the metadata; twice is fine; a running one is stopped first.
    for _ in range(2):
        cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert listed(pb.PodSandboxFilter()) == [other]
    assert sid not in _k8s_containers(cri)
    err = _error(cri.runtime.PodSandboxStatus, pb.PodSandboxStatusRequest(pod_sandbox_id=sid))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=other))
    assert listed(pb.PodSandboxFilter()) == []
    assert _k8s_containers(cri) == []
    assert testing.netns_files(cri.daemon.state) == []
    # The name is free again.
    again = cri.run(cri.pod_config("web"))
    assert cri.status(again).status.state == pb.SANDBOX_READY


def test_cni_check_in_the_verbose_status(cri: Cri) -> None:
    sid = cri.run(cri.pod_config("checked"))
    info = json.loads(cri.status(sid, verbose=True).info["info"])
    assert info["cniCheck"] == "ok"
    # the bridge plugin's CHECK notices that the pod lost its interface
    subprocess.run(
        ["nsenter", f"--net={info['netNamespacePath']}", "ip", "link", "del", "eth0"],
        check=True,
    )
    info = json.loads(cri.status(sid, verbose=True).info["info"])
    assert "failed (CHECK)" in info["cniCheck"]
    assert "bridge" in info["cniCheck"]


def test_host_network_pod_has_no_namespace_of_its_own(cri: Cri) -> None:
    config = cri.pod_config("host")
    config.linux.security_context.namespace_options.network = pb.NODE
    sid = cri.run(config)
    st = cri.status(sid, verbose=True)
    assert st.status.state == pb.SANDBOX_READY
    assert st.status.linux.namespaces.options.network == pb.NODE
    assert st.status.network.ip == ""
    assert json.loads(st.info["info"])["netNamespacePath"] == ""
    assert testing.netns_files(cri.daemon.state) == []
    files = cri.daemon.root / "io.containerd.grpc.v1.cri" / "sandboxes" / sid
    assert (files / "hostname").read_text() == "host\n"
    assert (files / "hosts").read_text() == Path("/etc/hosts").read_text()


def test_pod_files_follow_the_dns_config(cri: Cri) -> None:
    config = cri.pod_config(
        "dns",
        dns_config=pb.DNSConfig(
            servers=["10.96.0.10"], searches=["ns.svc.cluster.local", "svc"], options=["ndots:5"]
        ),
    )
    sid = cri.run(config)
    files = cri.daemon.root / "io.containerd.grpc.v1.cri" / "sandboxes" / sid
    assert (files / "resolv.conf").read_text() == (
        "search ns.svc.cluster.local svc\nnameserver 10.96.0.10\noptions ndots:5\n"
    )
    assert (files / "hostname").read_text() == "dns\n"
    assert "127.0.0.1\tlocalhost\n" in (files / "hosts").read_text()
    plain = cri.run(cri.pod_config("plain"))
    plain_files = cri.daemon.root / "io.containerd.grpc.v1.cri" / "sandboxes" / plain
    assert (plain_files / "resolv.conf").read_text() == Path("/etc/resolv.conf").read_text()
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert not files.exists()


def test_run_without_cni_config_fails_cleanly(cri_without_cni: Cri) -> None:
    cri = cri_without_cni
    err = _error(cri.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cri.pod_config()))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no network config found" in (err.details() or "")
    assert testing.netns_files(cri.daemon.state) == []
    assert _k8s_containers(cri) == []
    assert cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    # hostNetwork pods need no CNI.
    config = cri.pod_config("host")
    config.linux.security_context.namespace_options.network = pb.NODE
    assert cri.status(cri.run(config)).status.state == pb.SANDBOX_READY


def test_failing_cni_plugin_leaves_nothing_behind(cri_failing_cni: Cri) -> None:
    cri = cri_failing_cni
    err = _error(cri.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cri.pod_config()))
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert "failnet refuses; by design" in (err.details() or "")
    assert testing.netns_files(cri.daemon.state) == []
    assert _k8s_containers(cri) == []
    assert _k8s_tasks(cri).strip().splitlines()[1:] == []
    assert cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    # The bridge plugin's DEL ran: its address allocation was released.
    leases = [p for p in (cri.base / "ipam").rglob("*") if p.is_file() and p.name[0].isdigit()]
    assert leases == []
    # And the name is not left reserved: the same pod fails the same way, not as a duplicate.
    err = _error(cri.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cri.pod_config()))
    assert err.code() == grpc.StatusCode.UNKNOWN


def test_sandboxes_survive_a_daemon_restart(cri: Cri) -> None:
    running = cri.run(cri.pod_config("keep"))
    stopped = cri.run(cri.pod_config("stopped"))
    cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=stopped))
    before = cri.status(running, verbose=True)
    netns = json.loads(before.info["info"])["netNamespacePath"]

    orphan = cri.daemon.state / "io.containerd.grpc.v1.cri" / "netns" / "orphan"
    orphan.touch()
    subprocess.run(["unshare", f"--net={orphan}", "true"], check=True)

    cri.daemon.stop()
    cri.daemon.start()

    assert not orphan.exists()

    after = cri.status(running, verbose=True)
    assert after.status.state == pb.SANDBOX_READY
    assert after.status.network.ip == before.status.network.ip
    assert after.status.created_at == before.status.created_at
    assert after.status.labels == before.status.labels
    assert json.loads(after.info["info"])["pid"] == json.loads(before.info["info"])["pid"]
    assert cri.status(stopped).status.state == pb.SANDBOX_NOTREADY
    # The name is still taken.
    err = _error(cri.runtime.RunPodSandbox, pb.RunPodSandboxRequest(config=cri.pod_config("keep")))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    # And the restored sandbox is torn down completely.
    for sid in (running, stopped):
        cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert cri.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert str(netns) not in [str(p) for p in testing.netns_files(cri.daemon.state)]
    assert _k8s_containers(cri) == []
    leases = [p for p in (cri.base / "ipam").rglob("*") if p.is_file() and p.name[0].isdigit()]
    assert leases == []


def _nat_rules() -> str:
    return subprocess.run(
        ["iptables", "-w", "-t", "nat", "-S"], capture_output=True, text=True, check=True
    ).stdout


def test_port_mappings_reach_the_portmap_plugin(cri: Cri) -> None:
    port = 20000 + int(cri.tag, 16) % 20000
    config = cri.pod_config(
        "ports",
        port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=port)],
    )
    sid = cri.run(config)
    ip = cri.status(sid).status.network.ip
    rules = [line for line in _nat_rules().splitlines() if f"--dport {port}" in line]
    assert any(f"{ip}:80" in line for line in rules), rules
    cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    assert f"--dport {port}" not in _nat_rules()


def test_sysctls_host_pid_and_unknown_ids(cri: Cri) -> None:
    config = cri.pod_config("tuned")
    config.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
    config.linux.security_context.namespace_options.pid = pb.NODE
    sid = cri.run(config)
    st = cri.status(sid, verbose=True)
    info = json.loads(st.info["info"])
    sysctl = subprocess.run(
        ["nsenter", f"--net={info['netNamespacePath']}", "cat",
         "/proc/sys/net/ipv4/ip_unprivileged_port_start"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert sysctl.strip() == "0"
    assert st.status.linux.namespaces.options.pid == pb.NODE
    host_pid_ns = Path("/proc/self/ns/pid").readlink()
    assert Path(f"/proc/{info['pid']}/ns/pid").readlink() == host_pid_ns
    # A pod without hostPID has a PID namespace of its own.
    other = json.loads(cri.status(cri.run(cri.pod_config("own")), verbose=True).info["info"])
    assert Path(f"/proc/{other['pid']}/ns/pid").readlink() != host_pid_ns
    # Stop and remove of an unknown sandbox succeed (the CRI's idempotence); status is NotFound.
    cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id="0" * 64))
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id="0" * 64))
    err = _error(cri.runtime.PodSandboxStatus, pb.PodSandboxStatusRequest(pod_sandbox_id="0" * 64))
    assert err.code() == grpc.StatusCode.NOT_FOUND
