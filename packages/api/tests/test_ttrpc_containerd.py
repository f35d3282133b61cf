"""Our ttrpc client against real peers: containerd's Go shim and containerd itself.

(a) A container runs under ``containerd-shim-runc-v2`` started by a private
containerd; our client connects to the shim's socket (the ``address`` file in
the task bundle) and ``Connect``/``State`` report the task's pid and status.
(b) Our client forwards an event envelope to containerd's ``<address>.ttrpc``
socket and the Go ``ctr events`` prints it.
(c) Our server faces Go's ttrpc client: a Go shim started directly forwards
its task events to our Events service while our client drives its task.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf import empty_pb2, timestamp_pb2

from pycontainerd.api import typeurl
from pycontainerd.api.ttrpc import CallContext, Client, Server, ServiceClient, ServiceSpec
from pycontainerd.core import errdefs
from pycontainerd.core.testing import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.system

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
SHIM = "/usr/bin/containerd-shim-runc-v2"
RUNC = "runc"
BUSYBOX = "/bin/busybox"


def require(*paths: str) -> None:
    """Skip (fail under CI) unless every system peer is present and we are root."""
    missing = [p for p in paths if shutil.which(p) is None]
    if os.geteuid() != 0:
        missing.append("root privileges")
    if missing:
        reason = f"system peers missing: {', '.join(missing)}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class Daemon:
    dir: Path
    address: str
    state: Path
    process: subprocess.Popen[bytes]

    def ctr(self, *args: str, timeout: float = 60, check: bool = True) -> str:
        proc = subprocess.run(
            [CTR, "-a", self.address, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            msg = f"ctr {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            raise AssertionError(msg)
        return proc.stdout

    def log(self) -> str:
        return (self.dir / "containerd.log").read_text(errors="replace")


@pytest.fixture
def containerd() -> Iterator[Daemon]:
    require(CONTAINERD, CTR, SHIM, RUNC)
    short = Path(tempfile.mkdtemp(dir="/tmp", prefix="ctd"))
    address = str(short / "c.sock")
    config = short / "config.toml"
    config.write_text(
        "version = 2\n"
        f'root = "{short / "root"}"\n'
        f'state = "{short / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{address}"\n'
    )
    with (short / "containerd.log").open("wb") as log:
        process = subprocess.Popen(
            [CONTAINERD, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    daemon = Daemon(short, address, short / "state", process)
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or (Path(address).is_socket() and Path(address + ".ttrpc").is_socket())
            ),
            timeout=20,
            what="containerd sockets",
        )
        if process.poll() is not None:
            msg = f"containerd exited ({process.returncode}):\n{daemon.log()}"
            raise AssertionError(msg)
        yield daemon
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=20)
        shutil.rmtree(short, ignore_errors=True)


def _rootfs(base: Path) -> Path:
    """A minimal root filesystem: a static busybox and the links the test runs."""
    require(BUSYBOX)
    rootfs = base / "rootfs"
    for d in ("bin", "dev", "proc", "sys", "tmp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for name in ("sh", "sleep"):
        (rootfs / "bin" / name).symlink_to("busybox")
    return rootfs


@contextlib.contextmanager
def running_container(daemon: Daemon, cid: str) -> Iterator[Path]:
    """Run ``sleep`` in container ``cid`` under the Go shim; yields the task bundle."""
    rootfs = _rootfs(daemon.dir)
    daemon.ctr("run", "-d", "--rootfs", str(rootfs), cid, "/bin/sleep", "300")
    try:
        yield daemon.state / "io.containerd.runtime.v2.task" / "default" / cid
    finally:
        daemon.ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
        daemon.ctr("task", "rm", "-f", cid, check=False)
        daemon.ctr("container", "rm", cid, check=False)


def _argv0(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def _task_spec() -> ServiceSpec:
    from pycontainerd.api.runtime.task.v2 import shim_pb2

    return ServiceSpec(
        "containerd.task.v2.Task",
        {
            "Connect": (shim_pb2.ConnectRequest, shim_pb2.ConnectResponse),
            "State": (shim_pb2.StateRequest, shim_pb2.StateResponse),
        },
    )


async def test_connect_and_state_against_the_go_shim(containerd: Daemon) -> None:
    from pycontainerd.api.runtime.task.v2 import shim_pb2
    from pycontainerd.api.types.task import task_pb2

    # An id of its own: the Go shim's runc root and the cgroup (/default/<id>)
    # are machine-wide, and other tests run containers in "default" at the same time.
    cid = f"t1-{uuid.uuid4().hex[:8]}"
    with running_container(containerd, cid) as bundle:
        address = (bundle / "address").read_text().strip()
        assert address.startswith("unix://")
        init_pid = int((bundle / "init.pid").read_text())

        async with await Client.connect(address, timeout=10) as client:
            task = ServiceClient(client, _task_spec(), namespace="default")
            conn = await task.call("Connect", shim_pb2.ConnectRequest(id=cid), timeout=10)
            assert conn.task_pid == init_pid
            assert _argv0(conn.shim_pid).endswith("containerd-shim-runc-v2")

            state = await task.call("State", shim_pb2.StateRequest(id=cid), timeout=10)
            assert state.id == cid
            assert state.pid == init_pid
            assert state.status == task_pb2.RUNNING
            assert state.bundle == str(bundle)

            # The Go shim's errors come back as errdefs kinds with their text.
            with pytest.raises(errdefs.NotFoundError) as excinfo:
                await task.call("State", shim_pb2.StateRequest(id="nope"), timeout=10)
            assert str(excinfo.value) == "container not created: not found"
            with pytest.raises(errdefs.UnimplementedError) as unimpl:
                await client.call(
                    "containerd.task.v2.Task", "Nope", empty_pb2.Empty(), empty_pb2.Empty
                )
            assert unimpl.value.message == "method Nope"

        rows = [line.split() for line in containerd.ctr("task", "ls").splitlines()]
        assert [cid, str(init_pid), "RUNNING"] in rows


async def test_forwarded_envelope_reaches_ctr_events(containerd: Daemon) -> None:
    from pycontainerd.api.events import task_pb2
    from pycontainerd.api.services.ttrpc.events.v1 import events_pb2
    from pycontainerd.api.types import event_pb2

    events = await asyncio.create_subprocess_exec(
        CTR,
        "-a",
        containerd.address,
        "events",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert events.stdout is not None
    cid = f"fwd-{uuid.uuid4().hex[:8]}"
    forward = ServiceSpec(
        "containerd.services.events.ttrpc.v1.Events",
        {"Forward": (events_pb2.ForwardRequest, empty_pb2.Empty)},
    )
    try:
        async with await Client.connect(containerd.address + ".ttrpc", timeout=10) as client:
            svc = ServiceClient(client, forward, namespace="pyns")
            ts = timestamp_pb2.Timestamp()
            ts.GetCurrentTime()
            envelope = event_pb2.Envelope(
                timestamp=ts,
                namespace="pyns",
                topic="/tasks/exit",
                event=typeurl.pack(
                    task_pb2.TaskExit(container_id=cid, id=cid, pid=4242, exit_status=7)
                ),
            )

            # containerd checks forwarded envelopes; its error arrives as a kind.
            with pytest.raises(errdefs.InvalidArgumentError) as excinfo:
                await svc.call(
                    "Forward",
                    events_pb2.ForwardRequest(
                        envelope=event_pb2.Envelope(namespace="pyns", topic="/tasks/exit")
                    ),
                    timeout=10,
                )
            assert excinfo.value.message == "timestamp must be set on forwarded event"

            # ctr subscribes at some point after it starts: forward until it prints.
            line = ""
            async with asyncio.timeout(20):
                while cid not in line:
                    await svc.call(
                        "Forward", events_pb2.ForwardRequest(envelope=envelope), timeout=10
                    )
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.2):
                            line = (await events.stdout.readline()).decode()
    finally:
        with contextlib.suppress(ProcessLookupError):
            events.terminate()
        await events.wait()

    # "<timestamp> <namespace> <topic> <event as JSON>"
    assert " UTC pyns /tasks/exit {" in line
    assert f'"container_id":"{cid}"' in line
    assert '"pid":4242' in line
    assert '"exit_status":7' in line


def _bundle(base: Path, args: list[str]) -> Path:
    """An OCI bundle running ``args`` in the busybox rootfs (spec from ``runc spec``)."""
    bundle = base / "bundle"
    bundle.mkdir()
    _rootfs(bundle)
    subprocess.run([RUNC, "spec"], cwd=bundle, check=True, capture_output=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"]["readonly"] = False
    (bundle / "config.json").write_text(json.dumps(spec))
    return bundle


def _full_task_spec() -> ServiceSpec:
    from pycontainerd.api.runtime.task.v2 import shim_pb2 as s

    return ServiceSpec(
        "containerd.task.v2.Task",
        {
            "Create": (s.CreateTaskRequest, s.CreateTaskResponse),
            "Start": (s.StartRequest, s.StartResponse),
            "Kill": (s.KillRequest, empty_pb2.Empty),
            "Wait": (s.WaitRequest, s.WaitResponse),
            "Delete": (s.DeleteRequest, s.DeleteResponse),
            "Connect": (s.ConnectRequest, s.ConnectResponse),
            "Shutdown": (s.ShutdownRequest, empty_pb2.Empty),
        },
    )


class _EventSink:
    """Our ttrpc Events service: what the Go shim forwards lands here."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, str, Any]] = []
        self.deleted = asyncio.Event()

    async def Forward(self, ctx: CallContext, req: Any) -> empty_pb2.Empty:  # noqa: N802
        event = typeurl.unpack(req.envelope.event)
        self.received.append((ctx.namespace, req.envelope.topic, event))
        if req.envelope.topic == "/tasks/delete":
            self.deleted.set()
        return empty_pb2.Empty()


def _cleanup_shim(shim_pid: int, ns: str) -> None:
    """Undo what a failed run may leave: the shim this test started, runc state."""
    with contextlib.suppress(OSError):
        if shim_pid and _argv0(shim_pid).endswith("containerd-shim-runc-v2"):
            os.kill(shim_pid, 9)
    subprocess.run(
        [RUNC, "--root", f"/run/containerd/runc/{ns}", "delete", "-f", "t1"],
        capture_output=True,
        check=False,
    )
    with contextlib.suppress(OSError):
        os.rmdir(f"/run/containerd/runc/{ns}")


async def test_go_shim_forwards_events_to_our_server() -> None:
    """The Go shim's ttrpc client talks to our server; our client drives the shim."""
    from pycontainerd.api.events import task_pb2 as events
    from pycontainerd.api.runtime.task.v2 import shim_pb2 as s
    from pycontainerd.api.services.ttrpc.events.v1 import events_pb2

    require(SHIM, RUNC, BUSYBOX)
    short = Path(tempfile.mkdtemp(dir="/tmp", prefix="gs"))
    ns = f"pyt{uuid.uuid4().hex[:8]}"
    bundle = _bundle(short, ["/bin/sleep", "300"])
    # The shim writes its log into this FIFO; keep a reader open so it can.
    os.mkfifo(bundle / "log")
    log_fd = os.open(bundle / "log", os.O_RDONLY | os.O_NONBLOCK)
    sink = _EventSink()
    server = Server()
    server.register_service(
        ServiceSpec(
            "containerd.services.events.ttrpc.v1.Events",
            {"Forward": (events_pb2.ForwardRequest, empty_pb2.Empty)},
        ),
        sink,
    )
    events_socket = str(short / "ev.sock")
    await server.listen_unix(events_socket)
    shim_pid = 0
    try:
        start = await asyncio.create_subprocess_exec(
            SHIM,
            *("-namespace", ns, "-address", str(short / "none.sock"), "-id", "t1", "start"),
            cwd=bundle,
            env={**os.environ, "TTRPC_ADDRESS": events_socket, "NAMESPACE": ns},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await start.communicate()
        assert start.returncode == 0, err.decode()
        address = out.decode().strip()

        async with await Client.connect(address, timeout=10) as client:
            task = ServiceClient(client, _full_task_spec(), namespace=ns)
            created = await task.call(
                "Create", s.CreateTaskRequest(id="t1", bundle=str(bundle)), timeout=30
            )
            connected = await task.call("Connect", s.ConnectRequest(id="t1"), timeout=10)
            shim_pid = connected.shim_pid
            started = await task.call("Start", s.StartRequest(id="t1"), timeout=30)
            assert started.pid == created.pid == connected.task_pid
            await task.call("Kill", s.KillRequest(id="t1", signal=9), timeout=10)
            waited = await task.call("Wait", s.WaitRequest(id="t1"), timeout=30)
            assert waited.exit_status == 137
            await task.call("Delete", s.DeleteRequest(id="t1"), timeout=30)
            async with asyncio.timeout(20):
                await sink.deleted.wait()
            with contextlib.suppress(errdefs.UnavailableError):
                await task.call("Shutdown", s.ShutdownRequest(id="t1"), timeout=10)
    finally:
        _cleanup_shim(shim_pid, ns)
        server.close()
        await server.wait_closed()
        os.close(log_fd)
        shutil.rmtree(short, ignore_errors=True)

    topics = [(namespace, topic) for namespace, topic, _ in sink.received]
    assert topics == [
        (ns, "/tasks/create"),
        (ns, "/tasks/start"),
        (ns, "/tasks/exit"),
        (ns, "/tasks/delete"),
    ]
    exit_event = sink.received[2][2]
    assert isinstance(exit_event, events.TaskExit)
    assert (exit_event.container_id, exit_event.pid, exit_event.exit_status) == (
        "t1",
        created.pid,
        137,
    )
