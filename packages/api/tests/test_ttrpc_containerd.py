"""Our ttrpc client against real peers: containerd's Go shim and containerd itself.

(a) A container runs under ``containerd-shim-runc-v2`` started by a private
containerd; our client connects to the shim's socket (the ``address`` file in
the task bundle) and ``Connect``/``State`` report the task's pid and status.
(b) Our client forwards an event envelope to containerd's ``<address>.ttrpc``
socket and the Go ``ctr events`` prints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from google.protobuf import empty_pb2, timestamp_pb2

from pycontainerd.api import typeurl
from pycontainerd.api.ttrpc import Client, ServiceClient, ServiceSpec
from pycontainerd.core import errdefs

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


def _wait_for(cond: object, what: str, deadline: float = 20) -> None:
    assert callable(cond)
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            msg = f"timed out waiting for {what}"
            raise AssertionError(msg)
        time.sleep(0.02)


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
        _wait_for(
            lambda: (
                process.poll() is not None
                or (Path(address).is_socket() and Path(address + ".ttrpc").is_socket())
            ),
            "containerd sockets",
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

    with running_container(containerd, "t1") as bundle:
        address = (bundle / "address").read_text().strip()
        assert address.startswith("unix://")
        init_pid = int((bundle / "init.pid").read_text())

        async with await Client.connect(address, timeout=10) as client:
            task = ServiceClient(client, _task_spec(), namespace="default")
            conn = await task.call("Connect", shim_pb2.ConnectRequest(id="t1"), timeout=10)
            assert conn.task_pid == init_pid
            assert _argv0(conn.shim_pid).endswith("containerd-shim-runc-v2")

            state = await task.call("State", shim_pb2.StateRequest(id="t1"), timeout=10)
            assert state.id == "t1"
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
        assert ["t1", str(init_pid), "RUNNING"] in rows


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
