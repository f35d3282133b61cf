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
    busybox = testing.static_busybox()
    assert busybox is not None
    archive = cri.base / "shell.tar"
    testing.build_pause_archive(
        busybox,
        archive,
        testing.SHELL_REF,
        entrypoint=(),
        user="",
        applets=("sh", "sleep", "dd", "cat"),
    )
    cri.daemon.ctr("-n", "k8s.io", "images", "import", str(archive))


def _wait_exited(cri: Cri, cid: str) -> pb.ContainerStatus:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st: pb.ContainerStatus = cri.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid)
        ).status
        if st.state == pb.CONTAINER_EXITED:
            return st
        time.sleep(0.1)
    raise AssertionError(f"{cid} did not exit")


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
        cid = str(
            cri.runtime.CreateContainer(
                pb.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod)
            ).container_id
        )
        cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        return cid

    (volume / "marker").write_text("through the symlink\n")
    hog = create("hog", "dd if=/dev/zero of=/dev/null bs=40M", memory=15 * 1024 * 1024)
    done = _wait_exited(cri, hog)
    assert (done.exit_code, done.reason) == (137, "OOMKilled")
    # the status lists the config's mounts
    assert [(m.container_path, m.host_path, m.readonly) for m in done.mounts] == [
        ("/data", str(link), True)
    ]

    # killed by a signal, not by the OOM killer: "Error" (after reading the volume
    # mounted through its host path's symlink: exit 5 when that fails)
    killed = create(
        "self-kill", 'test "$(cat /data/marker)" = "through the symlink" || exit 5; kill -9 $$'
    )
    done = _wait_exited(cri, killed)
    assert (done.exit_code, done.reason) == (137, "Error")
