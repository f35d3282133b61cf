"""The Go ``ctr`` runs containers on our daemon (Tasks service + runtime v2 manager).

Each test starts its own daemon (pycontainerd.daemon.testing) with a
busybox-static rootfs; no image is needed (``ctr run --rootfs DIR``). Most
tests run twice: with our shim (the default for ``io.containerd.runc.v2``) and
with the runtime mapped to containerd's Go ``containerd-shim-runc-v2``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.testing import wait_for
from pycontainerd.runtime.testing import (
    CTR,
    CtrRig,
    kill_with_shims,
    on_a_terminal,
    our_daemon,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import grpc

    from pycontainerd.daemon.testing import Daemon


pytestmark = [pytest.mark.system]

SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


class Rig(CtrRig):
    """Our daemon, a rootfs and helpers for the Go ctr."""

    daemon: Daemon

    def run_d(self, cid: str, *cmd: str) -> None:
        self.ok("run", "-d", "--rootfs", str(self.rootfs), cid, *cmd)

    def create_container(self, channel: grpc.Channel, cid: str, spec: bytes) -> None:
        """Create the container ``cid`` of ``default`` over gRPC: runc v2, OCI ``spec``."""
        from google.protobuf import any_pb2

        from pycontainerd.api.services.containers.v1 import containers_pb2, containers_pb2_grpc

        containers_pb2_grpc.ContainersStub(channel).Create(
            containers_pb2.CreateContainerRequest(
                container=containers_pb2.Container(
                    id=cid,
                    runtime=containers_pb2.Container.Runtime(name="io.containerd.runc.v2"),
                    spec=any_pb2.Any(type_url=SPEC_TYPE_URL, value=spec),
                )
            ),
            metadata=(("containerd-namespace", "default"),),
        )

    def tasks(self) -> dict[str, str]:
        out = self.ok("tasks", "ls")
        return {line.split()[0]: line.split()[2] for line in out.splitlines()[1:] if line.strip()}

    def bundle(self, cid: str, ns: str = "default") -> Path:
        return self.daemon.state / "io.containerd.runtime.v2.task" / ns / cid

    @contextlib.contextmanager
    def events(self) -> Iterator[list[str]]:
        """Lines of ``ctr events`` while the block runs (collected by a thread)."""
        proc = subprocess.Popen(
            [CTR, "-a", self.daemon.address, "events"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))  # type: ignore[union-attr]
        reader.start()
        try:
            # Subscribed once a publish shows up: create and remove namespaces until one does.
            deadline = time.monotonic() + 15
            n = 0
            while not any(f"probe-{self.tag}" in line for line in lines):
                if time.monotonic() > deadline:
                    pytest.fail("ctr events never subscribed")
                n += 1
                self.ok("namespaces", "create", f"probe-{self.tag}-{n}")
                self.ok("namespaces", "rm", f"probe-{self.tag}-{n}")
                time.sleep(0.05)
            yield lines
        finally:
            proc.terminate()
            proc.wait(10)
            reader.join(10)
            if proc.stdout is not None:
                proc.stdout.close()


def topics(lines: list[str], cid: str) -> list[str]:
    """Lifecycle topics (create, start, exit, delete) of the init process of ``cid``, in order."""
    out = []
    for line in lines:
        parts = line.split()
        topic = next((p for p in parts if p.startswith("/tasks/")), None)
        if topic is None or f'"container_id":"{cid}"' not in line:
            continue
        if topic == "/tasks/exit" and f'"id":"{cid}"' not in line:
            continue  # an exec's exit
        if topic not in {"/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"}:
            continue
        out.append(topic)
    return out


def _cleanup(rig: Rig) -> None:
    d = rig.daemon
    if d.proc is not None and d.proc.poll() is None:
        rig.kill_tasks()
    kill_with_shims(d, any_shim=True)


@pytest.fixture(params=["pyshim", "goshim"])
def rig(request: pytest.FixtureRequest) -> Iterator[Rig]:
    """Our daemon with our shim, or with io.containerd.runc.v2 mapped to the Go shim."""
    yield from _rig(go=request.param == "goshim")


@pytest.fixture
def pyrig() -> Iterator[Rig]:
    """Our daemon with our shim only."""
    yield from _rig(go=False)


def _rig(*, go: bool) -> Iterator[Rig]:
    with our_daemon("tk-", go_shim=go) as (d, rootfs):
        r = Rig(d, rootfs, uuid.uuid4().hex[:8])
        try:
            d.start()
            yield r
        finally:
            _cleanup(r)


def test_run_rm_prints_output_and_exit_status(rig: Rig) -> None:
    cid = rig.id("t1")
    res = rig.ctr(
        "run", "--rm", "--rootfs", str(rig.rootfs), cid, "/bin/sh", "-c", "echo hello; exit 3"
    )
    why = f"exit {res.returncode}, stderr {res.stderr!r}, daemon log:\n{rig.daemon.log()[-6000:]}"
    assert res.stdout == "hello\n", why
    assert res.returncode == 3, why
    assert rig.tasks() == {}
    assert cid not in rig.ok("containers", "ls")
    assert not rig.bundle(cid).exists()


def test_detached_task_lifecycle_and_events(rig: Rig) -> None:
    cid = rig.id("t2")
    with rig.events() as lines:
        rig.run_d(cid, "/bin/sleep", "300")
        assert rig.tasks() == {cid: "RUNNING"}
        pid = rig.ok("tasks", "ls").splitlines()[1].split()[1]
        ps = rig.ok("tasks", "ps", cid)
        assert pid in ps.split()
        assert rig.ok("tasks", "exec", "--exec-id", "e1", cid, "/bin/echo", "hi") == "hi\n"
        rig.ok("tasks", "pause", cid)
        assert rig.tasks() == {cid: "PAUSED"}
        rig.ok("tasks", "resume", cid)
        assert rig.tasks() == {cid: "RUNNING"}
        metrics = rig.ok("tasks", "metrics", cid)
        assert cid in metrics
        assert "METRIC" in metrics
        rig.ok("tasks", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: rig.tasks() == {cid: "STOPPED"}, what="task to stop")
        rig.ok("tasks", "rm", cid)
        assert rig.tasks() == {}
        rig.ok("containers", "rm", cid)
        wait_for(lambda: "/tasks/delete" in topics(lines, cid), what="/tasks/delete")
        time.sleep(0.3)  # anything doubled would arrive right behind
    assert topics(lines, cid) == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    assert not rig.bundle(cid).exists()


def test_exec_id_reused_is_already_exists(rig: Rig) -> None:
    cid = rig.id("t3")
    rig.run_d(cid, "/bin/sleep", "300")
    longer = subprocess.Popen(
        [
            CTR,
            "-a",
            rig.daemon.address,
            "tasks",
            "exec",
            "--exec-id",
            "e1",
            cid,
            "/bin/sleep",
            "30",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: "e1" in rig.ok("tasks", "ps", cid), what="exec e1")
        res = rig.ctr("tasks", "exec", "--exec-id", "e1", cid, "/bin/echo", "hi")
        assert res.returncode == 1
        assert res.stderr.strip() == "ctr: id e1: already exists"
    finally:
        longer.kill()
        longer.wait()


def test_kill_of_missing_task_is_not_found(pyrig: Rig) -> None:
    res = pyrig.ctr("tasks", "kill", "nope")
    assert res.returncode == 1
    assert res.stderr.strip() == 'ctr: container "nope" in namespace "default": not found'
    cid = pyrig.id("c")
    pyrig.ok("containers", "create", "--rootfs", str(pyrig.rootfs), cid, "/bin/true")  # no task
    res = pyrig.ctr("tasks", "kill", cid)
    assert res.returncode == 1
    assert res.stderr.strip() == f"ctr: no running task found: task {cid} not found: not found"


def test_missing_shim_binary_has_upstreams_error(pyrig: Rig) -> None:
    cid = pyrig.id("m")
    res = pyrig.ctr(
        "run", "--runtime", "io.containerd.nope.v1", "--rootfs", str(pyrig.rootfs), cid, "/bin/true"
    )
    assert res.returncode == 1
    assert res.stderr.strip() == (
        "ctr: failed to start shim: failed to resolve runtime path: "
        'runtime "io.containerd.nope.v1" binary not installed "containerd-shim-nope-v1": '
        "file does not exist: unknown"
    )
    assert not pyrig.bundle(cid).exists()
    assert pyrig.tasks() == {}


def test_bad_spec_is_invalid_argument(pyrig: Rig) -> None:
    import grpc

    from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc

    md = (("containerd-namespace", "default"),)
    cid = pyrig.id("bad")
    with grpc.insecure_channel(f"unix://{pyrig.daemon.address}") as ch:
        pyrig.create_container(ch, cid, b"{not json")
        tasks = tasks_pb2_grpc.TasksStub(ch)
        with pytest.raises(grpc.RpcError) as excinfo:
            tasks.Create(tasks_pb2.CreateTaskRequest(container_id=cid), metadata=md)
        assert excinfo.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "invalid OCI spec" in (excinfo.value.details() or "")
        with pytest.raises(grpc.RpcError) as excinfo:
            tasks.Checkpoint(tasks_pb2.CheckpointTaskRequest(container_id=cid), metadata=md)
        assert excinfo.value.code() is grpc.StatusCode.NOT_FOUND
    assert not pyrig.bundle(cid).exists()


def test_checkpoint_is_unimplemented(pyrig: Rig) -> None:
    import grpc

    from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc

    cid = pyrig.id("cp")
    pyrig.run_d(cid, "/bin/sleep", "300")
    with (
        grpc.insecure_channel(f"unix://{pyrig.daemon.address}") as ch,
        pytest.raises(grpc.RpcError) as excinfo,
    ):
        tasks_pb2_grpc.TasksStub(ch).Checkpoint(
            tasks_pb2.CheckpointTaskRequest(container_id=cid),
            metadata=(("containerd-namespace", "default"),),
        )
    assert excinfo.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "checkpoint" in (excinfo.value.details() or "")


def test_run_t_gives_a_tty(rig: Rig) -> None:
    cid = rig.id("tty")
    argv = [CTR, "-a", rig.daemon.address, "run", "-t", "--rm", "--rootfs", str(rig.rootfs)]
    seen = bytearray()
    with on_a_terminal([*argv, cid, "/bin/sh"]) as (proc, master):

        def read_until(marker: bytes, timeout: float = 15.0) -> None:
            deadline = time.monotonic() + timeout
            while marker not in seen:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {marker!r} on the tty; got {bytes(seen)!r}")
                ready, _, _ = select.select([master], [], [], left)
                if ready:
                    with contextlib.suppress(OSError):
                        seen.extend(os.read(master, 4096))

        os.write(master, b"[ -t 0 ] && echo is-a-$((20+22))-tty\n")
        read_until(b"is-a-42-tty")
        os.write(master, b"exit 7\n")
        assert proc.wait(15) == 7


def run_d_started(rig: Rig, cid: str, *cmd: str) -> None:
    """``run_d``, then wait until the daemon has published the task's ``/tasks/start``.

    Shims forward events from a queue, after the call returns; a daemon stopped
    before that gets the event from the shim once it is back, after the test's
    own subscription started.
    """
    with rig.events() as lines:
        rig.run_d(cid, *cmd)
        wait_for(lambda: "/tasks/start" in topics(lines, cid), what="/tasks/start")


def test_restart_keeps_the_task_and_announces_its_exit_once(rig: Rig) -> None:
    cid = rig.id("r")
    run_d_started(rig, cid, "/bin/sleep", "300")
    assert rig.daemon.stop(signal.SIGTERM) == 0
    rig.daemon.start()
    assert rig.tasks() == {cid: "RUNNING"}
    with rig.events() as lines:
        rig.ok("tasks", "kill", "-s", "SIGKILL", cid)
        wait_for(lambda: rig.tasks() == {cid: "STOPPED"}, what="task to stop")
        rig.ok("tasks", "rm", cid)
        wait_for(lambda: "/tasks/delete" in topics(lines, cid), what="/tasks/delete")
        time.sleep(0.3)
    assert topics(lines, cid) == ["/tasks/exit", "/tasks/delete"]
    assert not rig.bundle(cid).exists()


def test_task_exited_while_daemon_down_is_announced_once(pyrig: Rig) -> None:
    cid = pyrig.id("down")
    run_d_started(pyrig, cid, "/bin/sleep", "300")
    pid = int(pyrig.ok("tasks", "ls").splitlines()[1].split()[1])
    assert pyrig.daemon.stop(signal.SIGTERM) == 0
    os.kill(pid, signal.SIGKILL)
    pyrig.daemon.start()
    with pyrig.events() as lines:
        wait_for(lambda: pyrig.tasks() == {cid: "STOPPED"}, what="stopped task after restart")
        wait_for(lambda: "/tasks/exit" in topics(lines, cid), timeout=30, what="the queued exit")
        pyrig.ok("tasks", "rm", cid)
        wait_for(lambda: "/tasks/delete" in topics(lines, cid), what="/tasks/delete")
        time.sleep(0.3)
    assert topics(lines, cid) == ["/tasks/exit", "/tasks/delete"]


def test_shim_killed_mid_run_is_reported_exited_once(rig: Rig) -> None:
    cid = rig.id("k")
    with rig.events() as lines:
        rig.run_d(cid, "/bin/sleep", "300")
        # Shims forward events from a queue, after the call returns: let /tasks/start out first.
        wait_for(lambda: "/tasks/start" in topics(lines, cid), what="/tasks/start")
        bundle = rig.bundle(cid)
        shim_pid = int((bundle / "shim.pid").read_text())
        os.kill(shim_pid, signal.SIGKILL)
        wait_for(lambda: not bundle.exists(), what="bundle cleanup")
        wait_for(lambda: "/tasks/delete" in topics(lines, cid), what="/tasks/delete")
        assert rig.tasks() == {}
        time.sleep(0.3)
    assert topics(lines, cid) == ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]
    exit_line = next(line for line in lines if "/tasks/exit" in line and cid in line)
    assert '"exit_status":137' in exit_line or '"exit_status":255' in exit_line
    rig.ok("containers", "rm", cid)


@pytest.mark.slow
def test_fifty_containers_start_concurrently(pyrig: Rig) -> None:
    ids = [pyrig.id(f"c{i}") for i in range(50)]
    procs = [
        subprocess.Popen(
            [
                CTR,
                "-a",
                pyrig.daemon.address,
                "run",
                "-d",
                "--rootfs",
                str(pyrig.rootfs),
                cid,
                "/bin/sleep",
                "300",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cid in ids
    ]
    outcomes = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
    assert [err for err, code in outcomes if code != 0] == []
    assert pyrig.tasks() == dict.fromkeys(ids, "RUNNING")
    for cid in ids:
        pyrig.ok("tasks", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: set(pyrig.tasks().values()) == {"STOPPED"}, timeout=60, what="all stopped")
    for cid in ids:
        pyrig.ok("tasks", "rm", cid)
    assert pyrig.tasks() == {}


def oci_archive(rootfs: Path, out: Path, name: str) -> Path:
    """An OCI image archive (one uncompressed layer of ``rootfs``) named ``name``, built offline."""
    import hashlib
    import io
    import json
    import tarfile

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(rootfs.rglob("*")):
            tf.add(path, arcname=str(path.relative_to(rootfs)), recursive=False)
    layer = buf.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest(manifest),
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": name},
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    with tarfile.open(out, "w") as tf:
        for member, data in [
            ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
            ("index.json", index),
            *((f"blobs/sha256/{digest(b)[7:]}", b) for b in (layer, config, manifest)),
        ]:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return out


IMAGE = "example.com/busybox:e2e"


def test_run_an_imported_image(rig: Rig) -> None:
    """Rootfs from a snapshot: ``ctr`` passes the overlay mounts with ``Tasks.Create``."""
    archive = oci_archive(rig.rootfs, rig.daemon.base / "bb.tar", IMAGE)
    rig.ok("images", "import", str(archive))
    cid = rig.id("img")
    res = rig.ctr("run", "--rm", IMAGE, cid, "/bin/sh", "-c", "echo hello; exit 3")
    why = f"exit {res.returncode}, stderr {res.stderr!r}, daemon log:\n{rig.daemon.log()[-6000:]}"
    assert res.stdout == "hello\n", why
    assert res.returncode == 3, why
    assert rig.tasks() == {}


def test_create_takes_rootfs_from_the_containers_snapshot(pyrig: Rig) -> None:
    """Without rootfs mounts in the request, the container's snapshot provides them."""
    import grpc

    from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc

    archive = oci_archive(pyrig.rootfs, pyrig.daemon.base / "bb.tar", IMAGE)
    pyrig.ok("images", "import", str(archive))
    cid = pyrig.id("snap")
    pyrig.ok(
        "containers", "create", IMAGE, cid, "--", "/bin/sh", "-c", "[ -x /bin/busybox ] && exit 5"
    )
    md = (("containerd-namespace", "default"),)
    with grpc.insecure_channel(f"unix://{pyrig.daemon.address}") as ch:
        tasks = tasks_pb2_grpc.TasksStub(ch)
        created = tasks.Create(tasks_pb2.CreateTaskRequest(container_id=cid), metadata=md)
        assert created.pid > 0
        waiting = tasks.Wait.future(tasks_pb2.WaitRequest(container_id=cid), metadata=md)
        tasks.Start(tasks_pb2.StartRequest(container_id=cid), metadata=md)
        assert waiting.result(30).exit_status == 5
        deleted = tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=md)
        assert deleted.exit_status == 5
        assert deleted.pid == created.pid
    assert not pyrig.bundle(cid).exists()


def test_client_default_spec_runs(pyrig: Rig) -> None:
    """The client's default OCI spec (pycontainerd.client.oci) is one runc accepts."""
    import grpc

    from pycontainerd.api.services.tasks.v1 import tasks_pb2, tasks_pb2_grpc

    oci = pytest.importorskip("pycontainerd.client.oci")
    cid = pyrig.id("oci")
    spec = oci.generate_spec(
        "default",
        cid,
        oci.with_rootfs_path(str(pyrig.rootfs)),
        oci.with_process_args("/bin/sh", "-c", "[ -s /proc/kcore ] || exit 9"),
    )
    md = (("containerd-namespace", "default"),)
    with grpc.insecure_channel(f"unix://{pyrig.daemon.address}") as ch:
        pyrig.create_container(ch, cid, oci.spec_bytes(spec))
        tasks = tasks_pb2_grpc.TasksStub(ch)
        tasks.Create(tasks_pb2.CreateTaskRequest(container_id=cid), metadata=md)
        waiting = tasks.Wait.future(tasks_pb2.WaitRequest(container_id=cid), metadata=md)
        tasks.Start(tasks_pb2.StartRequest(container_id=cid), metadata=md)
        assert waiting.result(30).exit_status == 9  # /proc/kcore is masked (empty)
        tasks.Delete(tasks_pb2.DeleteTaskRequest(container_id=cid), metadata=md)


def _spares_of(address: str) -> set[int]:
    """Live spare shims started for the daemon at ``address`` (no ``-namespace`` given)."""
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "pycontainerd.runtime.shim" in argv and address in argv and "-namespace" not in argv:
                found.add(int(proc.name))
    return found


def test_a_new_shim_is_the_spare_and_survives_a_restart(pyrig: Rig) -> None:
    d = pyrig.daemon
    a, b = pyrig.id("a"), pyrig.id("b")
    assert _spares_of(d.address) == set()  # none before a new shim was needed
    pyrig.ok("-n", "one", "run", "-d", "--rootfs", str(pyrig.rootfs), a, "/bin/sleep", "300")
    wait_for(lambda: len(_spares_of(d.address)) == 1, what="a spare after the first new shim")
    (waiting,) = _spares_of(d.address)
    # Another namespace needs a new shim: the spare becomes it.
    pyrig.ok("-n", "two", "run", "-d", "--rootfs", str(pyrig.rootfs), b, "/bin/sleep", "300")
    shim = int((pyrig.bundle(b, "two") / "shim.pid").read_text())
    assert shim == waiting
    # (a spare keeps its command line: the shim it became is still listed)
    wait_for(lambda: len(_spares_of(d.address) - {shim}) == 1, what="the next spare")
    (following,) = _spares_of(d.address) - {shim}
    # The daemon's stop kills its spare; the shim made of one keeps its task.
    assert d.stop(signal.SIGTERM) == 0
    wait_for(lambda: not _spares_of(d.address) - {shim}, what="the spare to be killed")
    assert following not in _spares_of(d.address)
    d.start()
    assert "RUNNING" in pyrig.ok("-n", "two", "tasks", "ls")
    for ns, cid in (("two", b), ("one", a)):
        _kill_and_remove(pyrig, ns, cid)
    wait_for(lambda: shim not in _spares_of(d.address), what="the shim to exit after its task")


def _kill_and_remove(rig: Rig, ns: str, cid: str) -> None:
    rig.ok("-n", ns, "tasks", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: "STOPPED" in rig.ok("-n", ns, "tasks", "ls"), what=f"{cid} to stop")
    rig.ok("-n", ns, "tasks", "rm", cid)
