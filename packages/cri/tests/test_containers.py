"""Containers in a pod: create, start, status, list, stop (SIGTERM then SIGKILL), remove."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.cri import testing
from pycontainerd.cri.containers import oom_score_adj

if TYPE_CHECKING:
    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]


def _import_shell(cri: Cri) -> None:
    cri.import_image(
        testing.SHELL_REF, ("sh", "sleep", "cat", "hostname", "httpd", "wget", "mkdir")
    )


def _container(
    cri: Cri, sid: str, pod: pb.PodSandboxConfig, name: str, *command: str, pid: int = pb.POD
) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=testing.SHELL_REF),
        command=list(command),
        labels={"c": name},
        log_path=f"{name}.log",
    )
    config.linux.security_context.namespace_options.pid = pid  # type: ignore[assignment]
    config.linux.resources.memory_limit_in_bytes = 64 * 1024 * 1024
    config.linux.resources.oom_score_adj = 500
    resp = cri.runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod)
    )
    return str(resp.container_id)


def _status(cri: Cri, cid: str) -> pb.ContainerStatusResponse:
    resp: pb.ContainerStatusResponse = cri.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid, verbose=True)
    )
    return resp


def test_container_lifecycle_in_a_pod(cri: Cri) -> None:
    _import_shell(cri)
    pod, sid, logs = cri.logged_pod("app")
    pause_pid = json.loads(cri.status(sid, verbose=True).info["info"])["pid"]

    cid = _container(cri, sid, pod, "sleeper", "sleep", "1000", pid=pb.CONTAINER)
    assert _status(cri, cid).status.state == pb.CONTAINER_CREATED
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    st = _status(cri, cid)
    assert st.status.state == pb.CONTAINER_RUNNING
    assert st.status.image.image == testing.SHELL_REF
    assert st.status.image_ref.startswith("sha256:")
    pid = json.loads(st.info["info"])["pid"]
    # Same network and UTS namespaces as the pause container; the pod's files are mounted.
    for ns in ("net", "uts", "ipc"):
        assert (
            Path(f"/proc/{pid}/ns/{ns}").readlink() == Path(f"/proc/{pause_pid}/ns/{ns}").readlink()
        )
    assert Path(f"/proc/{pid}/ns/pid").readlink() != Path(f"/proc/{pause_pid}/ns/pid").readlink()
    assert Path(f"/proc/{pid}/root/etc/hostname").read_text() == "app\n"
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "500"

    # The same name again in the pod: upstream's reservation error.
    with pytest.raises(grpc.RpcError) as info:
        _container(cri, sid, pod, "sleeper", "sleep", "1")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "failed to reserve container name" in (info.value.details() or "")

    # A container that exits on its own.
    quitter = _container(cri, sid, pod, "quitter", "sh", "-c", "exit 3")
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=quitter))
    done = cri.wait_exited(quitter)
    assert (done.exit_code, done.reason) == (3, "Error")
    assert done.finished_at >= done.started_at > 0

    listed = cri.runtime.ListContainers(
        pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sid))
    ).containers
    assert sorted(c.id for c in listed) == sorted([cid, quitter])
    running = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
    assert [
        c.id
        for c in cri.runtime.ListContainers(pb.ListContainersRequest(filter=running)).containers
    ] == [cid]

    # ExecSync: output, exit code, and a timeout.
    resp = cri.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", "echo hi; echo bad >&2; exit 4"])
    )
    assert (resp.stdout, resp.stderr, resp.exit_code) == (b"hi\n", b"bad\n", 4)
    with pytest.raises(grpc.RpcError) as info:
        cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sleep", "30"], timeout=1))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # Logs in the CRI format, both streams, the unterminated last line included.
    talker = _container(cri, sid, pod, "talker", "sh", "-c", "echo out; echo err >&2; printf tail")
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=talker))
    cri.wait_exited(talker)
    assert _status(cri, talker).status.log_path == str(logs / "talker.log")

    def log_lines() -> list[str]:
        path = logs / "talker.log"
        return path.read_text().splitlines() if path.exists() else []

    deadline = time.monotonic() + 10
    while len(log_lines()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    entries = sorted(line.split(" ", 1)[1] for line in log_lines())
    assert entries == ["stderr F err", "stdout F out", "stdout F tail"]
    stamp = log_lines()[0].split(" ", 1)[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", stamp), stamp

    # Stats from the container's cgroup.
    stats = cri.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert stats.attributes.id == cid
    assert stats.attributes.metadata.name == "sleeper"
    assert stats.cpu.usage_core_nano_seconds.value > 0
    assert stats.memory.usage_bytes.value > 0
    assert 0 < stats.memory.working_set_bytes.value <= stats.memory.usage_bytes.value
    listed_stats = cri.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(pod_sandbox_id=sid))
    ).stats
    assert {s.attributes.id for s in listed_stats} == {cid, quitter, talker}
    pod_stats = cri.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
    assert pod_stats.attributes.id == sid
    assert [c.attributes.id for c in pod_stats.linux.containers] == [cid]
    assert pod_stats.linux.memory.usage_bytes.value >= stats.memory.usage_bytes.value > 0
    assert pod_stats.linux.cpu.usage_core_nano_seconds.value > 0
    assert pod_stats.linux.process.process_count.value == 1  # the sleeper; pause not counted
    assert pod_stats.linux.process.timestamp > 0
    all_pods = cri.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats
    assert [p.attributes.id for p in all_pods] == [sid]

    # Resources: the limit from the config, then an update of the running container.
    def memory_limit() -> int:
        v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        base = Path("/sys/fs/cgroup") if v2 else Path("/sys/fs/cgroup/memory")
        name = "memory.max" if v2 else "memory.limit_in_bytes"
        return int((base / "k8s.io" / cid / name).read_text())

    assert memory_limit() == 64 * 1024 * 1024
    cri.runtime.UpdateContainerResources(
        pb.UpdateContainerResourcesRequest(
            container_id=cid,
            linux=pb.LinuxContainerResources(memory_limit_in_bytes=128 * 1024 * 1024),
        )
    )
    assert memory_limit() == 128 * 1024 * 1024

    # sleep is PID 1 of its own PID namespace: it ignores SIGTERM, so the timeout ends in SIGKILL.
    started = time.monotonic()
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1))
    assert time.monotonic() - started >= 1
    st2 = _status(cri, cid).status
    assert (st2.state, st2.exit_code) == (pb.CONTAINER_EXITED, 137)
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1))  # idempotent

    cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=quitter))
    with pytest.raises(grpc.RpcError) as info:
        _status(cri, quitter)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND

    # Removing the pod removes its remaining containers.
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert cri.runtime.ListContainers(pb.ListContainersRequest()).containers == []
    assert cri.daemon.ctr("-n", "k8s.io", "containers", "ls", "-q").stdout.split() == []
    # And a container cannot be created in it any more.
    with pytest.raises(grpc.RpcError) as info:
        _container(cri, sid, pod, "late", "sleep", "1")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_two_containers_share_the_pod_network(cri: Cri) -> None:
    _import_shell(cri)
    pod = cri.pod_config("web")
    sid = cri.run(pod)
    ip = cri.status(sid).status.network.ip
    server = _container(
        cri, sid, pod, "server",
        "sh", "-c", "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && "
        "exec httpd -f -p 8080 -h /tmp/www",
    )  # fmt: skip
    client = _container(cri, sid, pod, "client", "sleep", "1000")
    for cid in (server, client):
        cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    fetch = ["wget", "-q", "-O", "-", "http://127.0.0.1:8080/"]
    deadline = time.monotonic() + 20
    while True:  # until the server listens
        resp = cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=client, cmd=fetch, timeout=5))
        if resp.exit_code == 0 or time.monotonic() > deadline:
            break
    assert (resp.exit_code, resp.stdout) == (0, b"hello\n")
    # The pod IP serves the host too.
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with direct.open(f"http://{ip}:8080/", timeout=10) as page:
        assert page.read() == b"hello\n"
    # The pod's network stats count that traffic on eth0 (lo is left out).
    net = cri.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
    eth0 = net.linux.network.default_interface
    assert eth0.name == "eth0"
    assert eth0.rx_bytes.value > 0
    assert eth0.tx_bytes.value > len(b"hello\n")
    assert [i.name for i in net.linux.network.interfaces] == []


def test_containers_survive_a_daemon_restart(cri: Cri) -> None:
    _import_shell(cri)
    pod, sid, logs = cri.logged_pod("restart")
    runner = _container(cri, sid, pod, "looper", "sh", "-c", "echo before; exec sleep 1000")
    done = _container(cri, sid, pod, "done", "sh", "-c", "exit 2")
    created = _container(cri, sid, pod, "created", "sleep", "1")
    for cid in (runner, done):
        cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    cri.wait_exited(done)

    cri.daemon.stop()
    cri.daemon.start()

    st = _status(cri, runner).status
    assert st.state == pb.CONTAINER_RUNNING
    assert _status(cri, done).status.exit_code == 2
    assert _status(cri, created).status.state == pb.CONTAINER_CREATED
    resp = cri.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=runner, cmd=["sh", "-c", "echo again"])
    )
    assert resp.stdout == b"again\n"
    # Its exit is still seen after the restart.
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=runner, timeout=5))
    assert _status(cri, runner).status.state == pb.CONTAINER_EXITED
    assert "stdout F before" in (logs / "looper.log").read_text()
    cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert cri.runtime.ListContainers(pb.ListContainersRequest()).containers == []


def test_log_rotation_and_a_vanished_log_directory(cri: Cri) -> None:
    _import_shell(cri)
    pod, sid, logs = cri.logged_pod("logs")
    ticker = _container(cri, sid, pod, "ticker", "sh", "-c", "while :; do echo tick; sleep 1; done")
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=ticker))
    log = logs / "ticker.log"

    def wait_for_tick(path: Path) -> None:
        deadline = time.monotonic() + 15
        while not (path.exists() and "stdout F tick" in path.read_text()):
            assert time.monotonic() < deadline, f"no tick in {path}"
            time.sleep(0.1)

    wait_for_tick(log)
    rotated = logs / "ticker.log.1"
    log.rename(rotated)
    cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ticker))
    wait_for_tick(log)  # new lines go to the new file

    # The whole directory goes away: the container keeps running (its output is dropped)
    # and a reopen says why it cannot.
    shutil.rmtree(logs)
    with pytest.raises(grpc.RpcError) as info:
        cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ticker))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "failed to reopen container log" in (info.value.details() or "")
    resp = cri.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=ticker, cmd=["sh", "-c", "echo ok"])
    )
    assert resp.stdout == b"ok\n"
    assert _status(cri, ticker).status.state == pb.CONTAINER_RUNNING
    logs.mkdir()
    cri.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=ticker))
    wait_for_tick(log)


def test_container_events_stream(cri: Cri) -> None:
    _import_shell(cri)
    stream = cri.runtime.GetContainerEvents(pb.GetEventsRequest())
    seen: list[pb.ContainerEventResponse] = []
    got_one = threading.Event()

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):
            for event in stream:
                seen.append(event)
                got_one.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        pod = cri.pod_config("events")
        sid = cri.run(pod)
        attempt = 0
        while not got_one.wait(0.5):  # until the stream is subscribed
            attempt += 1
            assert attempt < 30, "no event ever arrived"
            probe = cri.run(cri.pod_config(f"probe{attempt}"))
            cri.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=probe))
        cid = _container(cri, sid, pod, "short", "sh", "-c", "exit 0")
        cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        cri.wait_exited(cid)
        cri.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
        deadline = time.monotonic() + 10
        while sum(e.container_id == cid for e in seen) < 4:
            assert time.monotonic() < deadline, [e.container_event_type for e in seen]
            time.sleep(0.05)
    finally:
        stream.cancel()
        reader.join(10)
    mine = [e for e in seen if e.container_id == cid]
    assert [e.container_event_type for e in mine] == [
        pb.CONTAINER_CREATED_EVENT,
        pb.CONTAINER_STARTED_EVENT,
        pb.CONTAINER_STOPPED_EVENT,
        pb.CONTAINER_DELETED_EVENT,
    ]
    assert all(e.pod_sandbox_status.id == sid for e in mine)
    stopped = mine[2]
    assert [s.exit_code for s in stopped.containers_statuses if s.id == cid] == [0]


def test_oom_score_adj_is_clamped_and_restricted() -> None:
    assert oom_score_adj(5000, restrict=False) == 1000
    assert oom_score_adj(-5000, restrict=False) == -1000
    assert oom_score_adj(-500, restrict=True, own=-100) == -100
    assert oom_score_adj(300, restrict=True, own=-100) == 300
