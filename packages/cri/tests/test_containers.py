"""Containers in a pod: create, start, status, list, stop (SIGTERM then SIGKILL), remove."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.cri import testing

if TYPE_CHECKING:
    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]


def _import_shell(cri: Cri) -> None:
    busybox = testing.static_busybox()
    assert busybox is not None
    archive = cri.base / "shell.tar"
    testing.build_pause_archive(
        busybox,
        archive,
        testing.SHELL_REF,
        entrypoint=(),
        user="",
        applets=("sh", "sleep", "cat", "hostname"),
    )
    cri.daemon.ctr("-n", "k8s.io", "images", "import", str(archive))


def _container(
    cri: Cri, sid: str, pod: pb.PodSandboxConfig, name: str, *command: str, pid: int = pb.POD
) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=testing.SHELL_REF),
        command=list(command),
        labels={"c": name},
    )
    config.linux.security_context.namespace_options.pid = pid  # type: ignore[assignment]
    resp = cri.runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod)
    )
    return str(resp.container_id)


def _status(cri: Cri, cid: str) -> pb.ContainerStatusResponse:
    resp: pb.ContainerStatusResponse = cri.runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=cid, verbose=True)
    )
    return resp


def _wait_exited(cri: Cri, cid: str) -> pb.ContainerStatus:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = _status(cri, cid).status
        if st.state == pb.CONTAINER_EXITED:
            return st
        time.sleep(0.05)
    raise AssertionError(f"{cid} did not exit")


def test_container_lifecycle_in_a_pod(cri: Cri) -> None:
    _import_shell(cri)
    pod = cri.pod_config("app")
    sid = cri.run(pod)
    import json

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

    # The same name again in the pod: upstream's reservation error.
    with pytest.raises(grpc.RpcError) as info:
        _container(cri, sid, pod, "sleeper", "sleep", "1")
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "failed to reserve container name" in (info.value.details() or "")

    # A container that exits on its own.
    quitter = _container(cri, sid, pod, "quitter", "sh", "-c", "exit 3")
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=quitter))
    done = _wait_exited(cri, quitter)
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
