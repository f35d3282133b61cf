"""Container config beyond the basics: OOM-killed exit reason, mounts in the status."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.cri import testing

if TYPE_CHECKING:
    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]


def _import_shell(cri: Cri) -> None:
    cri.import_image(testing.SHELL_REF, ("sh", "sleep", "dd", "cat"))


def test_oom_killed_reason_and_status_mounts(cri: Cri) -> None:
    _import_shell(cri)
    pod = cri.pod_config("oom")
    sid = cri.run(pod)
    volume = cri.base / "volume"
    volume.mkdir()
    link = cri.base / "volume-link"
    link.symlink_to(volume)

    def create(name: str, script: str, memory: int = 0) -> str:
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=testing.SHELL_REF),
            command=["sh", "-c", script],
            mounts=[pb.Mount(container_path="/data", host_path=str(link), readonly=True)],
        )
        if memory:
            config.linux.resources.memory_limit_in_bytes = memory
            config.linux.resources.memory_swap_limit_in_bytes = memory
        return cri.start_container(sid, pod, config)

    (volume / "marker").write_text("through the symlink\n")
    hog = create("hog", "dd if=/dev/zero of=/dev/null bs=40M", memory=15 * 1024 * 1024)
    done = cri.wait_exited(hog)
    assert (done.exit_code, done.reason) == (137, "OOMKilled")
    # the status lists the config's mounts
    assert [(m.container_path, m.host_path, m.readonly) for m in done.mounts] == [
        ("/data", str(link), True)
    ]

    # the leases that kept the new snapshots from the garbage collector until their
    # records existed are gone
    assert cri.daemon.ctr("-n", "k8s.io", "leases", "ls", "-q").stdout.split() == []

    # killed by a signal, not by the OOM killer: "Error" (after reading the volume
    # mounted through its host path's symlink: exit 5 when that fails)
    killed = create(
        "self-kill", 'test "$(cat /data/marker)" = "through the symlink" || exit 5; kill -9 $$'
    )
    done = cri.wait_exited(killed)
    assert (done.exit_code, done.reason) == (137, "Error")


def _run_container(
    cri: Cri, sid: str, pod: pb.PodSandboxConfig, name: str, script: str, **kw: object
) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=testing.SHELL_REF),
        command=["sh", "-c", script],
        **kw,  # type: ignore[arg-type]
    )
    return cri.start_container(sid, pod, config)


def _exec(cri: Cri, cid: str, *cmd: str) -> pb.ExecSyncResponse:
    resp: pb.ExecSyncResponse = cri.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=10)
    )
    return resp


def test_dev_shm_is_shared_in_a_pod_and_tty_containers(cri: Cri) -> None:
    _import_shell(cri)
    pod, sid, logs = cri.logged_pod("shm")
    _run_container(cri, sid, pod, "writer", "echo hello > /dev/shm/note; sleep 1000")
    reader = _run_container(cri, sid, pod, "reader", "sleep 1000")
    deadline = time.monotonic() + 10
    while _exec(cri, reader, "cat", "/dev/shm/note").stdout != b"hello\n":
        assert time.monotonic() < deadline, "the pod's containers do not share /dev/shm"
        time.sleep(0.1)
    # another pod has its own
    other_pod = cri.pod_config("shm-other")
    other = _run_container(cri, cri.run(other_pod), other_pod, "other", "sleep 1000")
    assert _exec(cri, other, "cat", "/dev/shm/note").exit_code != 0
    shm_dir = cri.base / "root" / "io.containerd.grpc.v1.cri" / "sandboxes" / sid / "shm"
    assert shm_dir.is_mount()
    assert (shm_dir / "note").read_text() == "hello\n"

    # a TTY container: its output goes through a terminal into the log
    tty = _run_container(
        cri,
        sid,
        pod,
        "tty",
        "test -t 1 && echo stdout-is-a-tty; sleep 1000",
        tty=True,
        log_path="tty.log",
    )
    deadline = time.monotonic() + 10
    log = logs / "tty.log"
    while not (log.exists() and "stdout-is-a-tty" in log.read_text()):
        assert time.monotonic() < deadline, "no terminal output in the log"
        time.sleep(0.1)
    assert _exec(cri, tty, "sh", "-c", "echo $TERM").stdout == b"xterm\n"

    # stopping the pod unmounts its /dev/shm
    cri.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
    assert not shm_dir.is_mount()
