"""``start`` and ``delete`` as the daemon runs them, and the shim's error answers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.api.runtime.task.v2 import shim_pb2
from pycontainerd.api.ttrpc import Client, ServiceClient
from pycontainerd.core.errdefs import (
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from pycontainerd.runtime.shim import bootstrap
from pycontainerd.runtime.shim.service import TASK_SPEC
from pycontainerd.runtime.testing import install_shim, is_our_shim, require, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator


class Daemon:
    """A fake daemon layout: state dir, bundles, address (nobody listens)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.state = os.path.join(root, "state")
        self.address = os.path.join(root, "c.sock")
        self.started: set[int] = set()
        os.mkdir(os.path.join(root, "bin"))
        self.binary = str(install_shim(Path(root) / "bin"))

    def bundle(
        self, task_id: str, ns: str = "ns", annotations: dict[str, str] | None = None
    ) -> str:
        path = os.path.join(self.state, "io.containerd.runtime.v2.task", ns, task_id)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"annotations": annotations or {}}, f)
        return path

    def shim(
        self, action: str, task_id: str, bundle: str, ns: str = "ns", **env: str
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [
            self.binary,
            "-namespace",
            ns,
            "-address",
            self.address,
            "-publish-binary",
            "/bin/false",
            "-id",
            task_id,
        ]
        if action == "delete":
            argv += ["-bundle", bundle]
        res = subprocess.run(
            [*argv, action],
            cwd=bundle,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=30,
            env={**os.environ, **env},
        )
        if action == "start" and res.returncode == 0:
            with open(os.path.join(bundle, "shim.pid")) as f:
                self.started.add(int(f.read()))
        return res


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    try:
        yield d
    finally:
        for pid in d.started:
            if is_our_shim(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(d.root, ignore_errors=True)


FAST = {"PYCONTAINERD_SHIM_RESERVATION_TTL": "0.5", "PYCONTAINERD_SHIM_LINGER": "0.1"}


def test_start_reuses_the_namespace_shim(daemon: Daemon) -> None:
    b1, b2 = daemon.bundle("a"), daemon.bundle("b")
    r1 = daemon.shim("start", "a", b1)
    assert r1.returncode == 0, r1.stderr
    address = r1.stdout.decode()
    assert address.startswith(f"unix://{daemon.state}/s/")
    with open(os.path.join(b1, "address")) as f:
        assert f.read() == address
    r2 = daemon.shim("start", "b", b2)
    assert r2.stdout.decode() == address
    assert len(daemon.started) == 1
    # another namespace, another shim
    r3 = daemon.shim("start", "c", daemon.bundle("c", ns="other"), ns="other")
    assert r3.stdout.decode() != address


def test_reuse_in_process_reserves_a_running_shim_only(daemon: Daemon) -> None:
    b1, b2, b3 = daemon.bundle("a"), daemon.bundle("b"), daemon.bundle("c", ns="other")
    # No shim runs for the namespace: reuse declines (``start`` must spawn one).
    assert bootstrap.reuse(b1, "ns", "a", daemon.address, "namespace") is None
    assert not os.path.exists(os.path.join(b1, "address"))
    address = daemon.shim("start", "a", b1).stdout.decode()
    got = bootstrap.reuse(b2, "ns", "b", daemon.address, "namespace")
    assert got == address
    with open(os.path.join(b2, "address")) as f:
        assert f.read() == address
    with open(os.path.join(b2, "shim.pid")) as f:
        assert int(f.read()) in daemon.started
    # Another namespace, or one shim per container: that shim does not run yet.
    assert bootstrap.reuse(b3, "other", "c", daemon.address, "namespace") is None
    assert bootstrap.reuse(b2, "ns", "b", daemon.address, "container") is None


def test_start_here_starts_a_shim_that_is_not_our_child(daemon: Daemon) -> None:
    b1, b2 = daemon.bundle("a"), daemon.bundle("b")
    env = {**os.environ, bootstrap.GROUPING_ENV: "namespace"}
    address = bootstrap.start_here(b1, "ns", "a", daemon.address, env)
    assert address.startswith(f"unix://{daemon.state}/s/")
    with open(os.path.join(b1, "shim.pid")) as f:
        pid = int(f.read())
    daemon.started.add(pid)
    assert is_our_shim(pid)
    with open(f"/proc/{pid}/stat") as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    assert ppid != os.getpid()  # the daemon must never have to reap a shim
    with open(os.path.join(b1, "address")) as f:
        assert f.read() == address
    # the server answers: ``start`` of the namespace's next task reserves it
    r2 = daemon.shim("start", "b", b2)
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.decode() == address
    assert daemon.started == {pid}


def test_group_annotation_and_container_policy(daemon: Daemon) -> None:
    a = daemon.shim(
        "start", "a", daemon.bundle("a", annotations={"io.kubernetes.cri.sandbox-id": "pod"})
    )
    b = daemon.shim(
        "start", "b", daemon.bundle("b", annotations={"io.kubernetes.cri.sandbox-id": "pod"})
    )
    c = daemon.shim("start", "c", daemon.bundle("c"), PYCONTAINERD_SHIM_GROUPING="container")
    assert a.stdout == b.stdout
    assert c.stdout != a.stdout


def test_unused_reservation_expires_and_the_shim_exits(daemon: Daemon) -> None:
    bundle = daemon.bundle("a")
    res = daemon.shim("start", "a", bundle, **FAST)
    assert res.returncode == 0, res.stderr
    (pid,) = daemon.started
    sock = res.stdout.decode().removeprefix("unix://")
    wait_for(lambda: not is_our_shim(pid), what="idle shim exit")
    assert not os.path.exists(sock)
    # A new start after that gets a new shim on the same address.
    again = daemon.shim("start", "b", daemon.bundle("b"), **FAST)
    assert again.stdout.decode() == res.stdout.decode()
    assert len(daemon.started) == 2


def test_delete_prints_a_delete_response(daemon: Daemon) -> None:
    require("runc")
    bundle = daemon.bundle("gone")
    with open(os.path.join(bundle, "init.pid"), "w") as f:
        f.write("4321")
    res = daemon.shim("delete", "gone", bundle)
    assert res.returncode == 0, res.stderr
    msg = shim_pb2.DeleteResponse()
    msg.ParseFromString(res.stdout)
    assert (msg.pid, msg.exit_status) == (4321, 137)
    assert msg.exited_at.seconds > 0


async def test_shim_answers_bad_calls_with_errdefs_kinds(daemon: Daemon, tmp_path: Path) -> None:
    bundle = daemon.bundle("a")
    res = daemon.shim("start", "a", bundle)
    async with await Client.connect(res.stdout.decode(), timeout=5) as client:
        task = ServiceClient(client, TASK_SPEC, namespace="ns")
        conn = await task.call("Connect", shim_pb2.ConnectRequest(id="a"))
        assert conn.shim_pid in daemon.started
        with pytest.raises(NotFoundError):
            await task.call("State", shim_pb2.StateRequest(id="nosuch"))
        with pytest.raises(NotFoundError):
            await task.call("Kill", shim_pb2.KillRequest(id="nosuch", signal=9))
        with pytest.raises(UnimplementedError, match="checkpoint is not supported"):
            await task.call("Checkpoint", shim_pb2.CheckpointTaskRequest(id="a"))
        with pytest.raises(InvalidArgumentError, match="task id must not be empty"):
            await task.call("Create", shim_pb2.CreateTaskRequest(id="", bundle=bundle))
        with pytest.raises(InvalidArgumentError, match="cannot read the OCI spec"):
            await task.call("Create", shim_pb2.CreateTaskRequest(id="x", bundle=str(tmp_path)))


def test_a_shim_cgroup_gets_its_own_group_unless_a_group_annotation_decides(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert bootstrap.group_of(str(plain), "t", "namespace") == ""
    assert bootstrap.group_of(str(plain), "t", "namespace", "/a") == "shim-cgroup:/a"
    assert bootstrap.group_of(str(plain), "t", "container", "/a") == "t"
    pod = tmp_path / "pod"
    pod.mkdir()
    (pod / "config.json").write_text('{"annotations": {"io.kubernetes.cri.sandbox-id": "sandbox"}}')
    assert bootstrap.group_of(str(pod), "t", "namespace", "/a") == "sandbox"


def test_joining_a_missing_shim_cgroup_has_upstreams_text() -> None:
    with pytest.raises(
        OSError, match=r"^failed to load cgroup /no-such-cgroup-x: cgroups: cgroup deleted$"
    ):
        bootstrap.join_cgroup("/no-such-cgroup-x", os.getpid())
