"""Sandboxes on our daemon: the Store and Controller services through the generated stubs.

A sandbox runs in its own pyrunc shim (real runc underneath); a container
whose ``sandbox`` names it has its task served by that shim. Also: an id
reused while running (AlreadyExists), and a sandbox whose shim dies (Status
shows it, Wait returns).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.events import sandbox_pb2 as events_pb2
from pycontainerd.api.services.containers.v1 import containers_pb2 as cpb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as cgrpc
from pycontainerd.api.services.events.v1 import events_pb2 as epb
from pycontainerd.api.services.events.v1 import events_pb2_grpc as egrpc
from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as spb
from pycontainerd.api.services.sandbox.v1 import sandbox_pb2_grpc as sgrpc
from pycontainerd.api.services.tasks.v1 import tasks_pb2 as tpb
from pycontainerd.api.services.tasks.v1 import tasks_pb2_grpc as tgrpc
from pycontainerd.api.types import sandbox_pb2 as types_pb
from pycontainerd.api.types.task import task_pb2 as task_types
from pycontainerd.runtime.testing import (
    CTR,
    is_our_shim,
    kill_with_shims,
    our_daemon,
    require,
    wait_for,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycontainerd.daemon.testing import Daemon

NS = (("containerd-namespace", "default"),)
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
RUNC = "io.containerd.runc.v2"

pytestmark = [pytest.mark.system]


class Api:
    """Stubs on the daemon's socket plus a rootfs and a default OCI spec."""

    def __init__(self, daemon: Daemon, rootfs: Path, tag: str) -> None:
        self.daemon = daemon
        self.rootfs = rootfs
        self.tag = tag
        self.reconnect()
        spec = json.loads(
            subprocess.run([CTR, "oci", "spec"], capture_output=True, check=True).stdout
        )
        spec["root"] = {"path": str(rootfs), "readonly": False}
        spec["process"]["terminal"] = False
        self.base_spec = spec

    def reconnect(self) -> None:
        """A new channel and stubs (after a daemon restart)."""
        self.channel = grpc.insecure_channel(f"unix://{self.daemon.address}")
        self.store = sgrpc.StoreStub(self.channel)
        self.controller = sgrpc.ControllerStub(self.channel)
        self.containers = cgrpc.ContainersStub(self.channel)
        self.tasks = tgrpc.TasksStub(self.channel)

    def id(self, name: str) -> str:
        return f"{name}-{self.tag}"

    def spec(self, cid: str, *args: str) -> bytes:
        """The default spec running ``args``, in a cgroup of its own (as ``ctr run`` makes)."""
        spec = json.loads(json.dumps(self.base_spec))
        spec["process"]["args"] = list(args)
        spec["linux"]["cgroupsPath"] = f"/default/{cid}"
        return json.dumps(spec).encode()

    def new_sandbox(self, sid: str) -> types_pb.Sandbox:
        sb = types_pb.Sandbox(sandbox_id=sid, sandboxer="shim", labels={"app": "test"})
        sb.runtime.name = RUNC
        sb.spec.type_url = SPEC_URL
        sb.spec.value = self.spec(sid, "/bin/sleep", "1000")
        self.store.Create(spb.StoreCreateRequest(sandbox=sb), metadata=NS)
        self.controller.Create(
            spb.ControllerCreateRequest(sandbox_id=sid, sandbox=sb, sandboxer="shim"), metadata=NS
        )
        return sb

    def status(self, sid: str) -> spb.ControllerStatusResponse:
        resp: spb.ControllerStatusResponse = self.controller.Status(
            spb.ControllerStatusRequest(sandbox_id=sid, sandboxer="shim", verbose=True),
            metadata=NS,
        )
        return resp


@pytest.fixture
def api() -> Iterator[Api]:
    with our_daemon("sb-") as (d, rootfs):
        a: Api | None = None
        try:
            d.start()
            a = Api(d, rootfs, uuid.uuid4().hex[:8])
            yield a
        finally:
            if a is not None:
                a.channel.close()
            kill_with_shims(d)


@contextlib.contextmanager
def sandbox_events(api: Api) -> Iterator[list[tuple[str, str]]]:
    """(topic, sandbox id) of the ``/sandboxes/*`` events published while the block runs."""
    events = egrpc.EventsStub(api.channel)
    stream = events.Subscribe(epb.SubscribeRequest())
    seen: list[tuple[str, str]] = []
    probed = threading.Event()

    def read() -> None:
        with contextlib.suppress(grpc.RpcError):
            for env in stream:
                if env.topic == "/probe":
                    probed.set()
                elif env.topic.startswith("/sandboxes/"):
                    # SandboxCreate, SandboxStart and SandboxExit all carry it as field 1.
                    msg = events_pb2.SandboxCreate()
                    msg.ParseFromString(env.event.value)
                    assert (
                        env.event.type_url
                        == "containerd.events."
                        + {
                            "/sandboxes/create": "SandboxCreate",
                            "/sandboxes/start": "SandboxStart",
                            "/sandboxes/exit": "SandboxExit",
                        }[env.topic]
                    )
                    seen.append((env.topic, msg.sandbox_id))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 15
        while not probed.is_set():  # subscribed once our own publish comes back
            assert time.monotonic() < deadline, "never subscribed"
            events.Publish(
                epb.PublishRequest(topic="/probe", event=any_pb2.Any(type_url="probe")),
                metadata=NS,
            )
            probed.wait(0.1)
        yield seen
    finally:
        stream.cancel()
        reader.join(10)


def _error(call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def test_sandbox_lifecycle_with_a_container(api: Api) -> None:
    with sandbox_events(api) as seen:
        _lifecycle(api)
        wait_for(lambda: len(seen) >= 3, 10, "sandbox events")
    sid = api.id("sb")
    assert seen == [
        ("/sandboxes/create", sid),
        ("/sandboxes/start", sid),
        ("/sandboxes/exit", sid),
    ]


def _lifecycle(api: Api) -> None:
    sid = api.id("sb")
    api.new_sandbox(sid)
    created = api.status(sid)
    assert created.state == "SANDBOX_NOTREADY"
    started = api.controller.Start(
        spb.ControllerStartRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    )
    assert started.pid > 0
    assert is_our_shim(started.pid)
    assert started.address.startswith("unix://")
    st = api.status(sid)
    assert (st.state, st.pid) == ("SANDBOX_READY", started.pid)
    assert st.address == started.address
    platform = api.controller.Platform(
        spb.ControllerPlatformRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    ).platform
    assert platform.os == "linux"
    assert platform.architecture
    metrics = api.controller.Metrics(
        spb.ControllerMetricsRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    ).metrics
    assert metrics.id == sid
    assert metrics.data.type_url.startswith("io.containerd.cgroups.v")

    # A container in the sandbox: its task is served by the sandbox's shim.
    cid = api.id("c1")
    container = cpb.Container(id=cid, sandbox=sid)
    container.runtime.name = RUNC
    container.spec.type_url = SPEC_URL
    container.spec.value = api.spec(cid, "/bin/sleep", "1000")
    api.containers.Create(cpb.CreateContainerRequest(container=container), metadata=NS)
    api.tasks.Create(tpb.CreateTaskRequest(container_id=cid), metadata=NS)
    api.tasks.Start(tpb.StartRequest(container_id=cid), metadata=NS)
    bundle = api.daemon.state / "io.containerd.runtime.v2.task" / "default" / cid
    assert (bundle / "address").read_text() == started.address
    assert int((bundle / "shim.pid").read_text()) == started.pid
    assert cid in api.status(sid).info["tasks"]

    # Stop: the sandbox's task is stopped, Wait returns, Status shows it.
    api.controller.Stop(
        spb.ControllerStopRequest(sandbox_id=sid, sandboxer="shim", timeout_secs=5), metadata=NS
    )
    waited = api.controller.Wait(
        spb.ControllerWaitRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS, timeout=30
    )
    assert waited.exited_at.ToNanoseconds() > 0
    task = api.tasks.Get(tpb.GetRequest(container_id=cid), metadata=NS).process
    assert task.status == task_types.STOPPED
    st = api.status(sid)
    assert st.state == "SANDBOX_NOTREADY"
    assert st.exited_at.ToNanoseconds() == waited.exited_at.ToNanoseconds()

    api.tasks.Delete(tpb.DeleteTaskRequest(container_id=cid), metadata=NS)
    api.containers.Delete(cpb.DeleteContainerRequest(id=cid), metadata=NS)
    api.controller.Shutdown(
        spb.ControllerShutdownRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    )
    api.store.Delete(spb.StoreDeleteRequest(sandbox_id=sid), metadata=NS)
    err = _error(
        api.controller.Status,
        spb.ControllerStatusRequest(sandbox_id=sid, sandboxer="shim"),
        metadata=NS,
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    wait_for(lambda: not is_our_shim(started.pid), 20, "the sandbox's shim to exit")
    assert not (api.daemon.state / "io.containerd.runtime.v2.task" / "default" / sid).exists()


def test_sandbox_id_reused_and_bad_sandboxer(api: Api) -> None:
    sid = api.id("dup")
    sb = api.new_sandbox(sid)
    err = _error(api.store.Create, spb.StoreCreateRequest(sandbox=sb), metadata=NS)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == (f'write error: sandbox bucket "{sid}" already exists: already exists')
    err = _error(
        api.controller.Create,
        spb.ControllerCreateRequest(sandbox_id=sid, sandbox=sb, sandboxer="shim"),
        metadata=NS,
    )
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == f"sandbox {sid} already running: already exists"
    err = _error(api.controller.Start, spb.ControllerStartRequest(sandbox_id=sid), metadata=NS)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "invalid argument: sandbox controller name can not be empty"
    err = _error(
        api.controller.Start,
        spb.ControllerStartRequest(sandbox_id=sid, sandboxer="nope"),
        metadata=NS,
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = _error(
        api.controller.Start,
        spb.ControllerStartRequest(sandbox_id=api.id("never"), sandboxer="shim"),
        metadata=NS,
    )
    assert err.code() == grpc.StatusCode.UNKNOWN
    assert f'unable to find sandbox "{api.id("never")}"' in (err.details() or "")
    api.controller.Shutdown(
        spb.ControllerShutdownRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    )


def test_sandbox_whose_shim_dies(api: Api) -> None:
    sid = api.id("dies")
    api.new_sandbox(sid)
    pid = api.controller.Start(
        spb.ControllerStartRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    ).pid
    waiter = api.controller.Wait.future(
        spb.ControllerWaitRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS, timeout=30
    )
    os.kill(pid, signal.SIGKILL)
    waited = waiter.result()
    assert waited.exit_status == 255
    st = api.status(sid)
    assert st.state == "SANDBOX_NOTREADY"
    assert st.info["reason"] == "shim exited"
    assert st.exited_at.ToNanoseconds() == waited.exited_at.ToNanoseconds()
    # Stop of a dead sandbox is a no-op; Shutdown forgets it; the id can be created anew.
    api.controller.Stop(spb.ControllerStopRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS)
    api.controller.Shutdown(
        spb.ControllerShutdownRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    )
    err = _error(api.status, sid)
    assert err.code() == grpc.StatusCode.NOT_FOUND


def _started_then_daemon_stopped(api: Api, sid: str) -> int:
    """Create and start sandbox ``sid``, then stop the daemon (cleanly); the shim's pid."""
    api.new_sandbox(sid)
    pid = api.controller.Start(
        spb.ControllerStartRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    ).pid
    api.channel.close()
    assert api.daemon.stop() == 0
    return int(pid)


def test_sandbox_survives_a_daemon_restart(api: Api) -> None:
    sid = api.id("keep")
    pid = _started_then_daemon_stopped(api, sid)
    assert is_our_shim(pid)  # the shim keeps the sandbox while the daemon is down
    api.daemon.start()
    api.reconnect()
    st = api.status(sid)
    assert (st.state, st.pid) == ("SANDBOX_READY", pid)
    api.controller.Stop(spb.ControllerStopRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS)
    api.controller.Shutdown(
        spb.ControllerShutdownRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    )
    wait_for(lambda: not is_our_shim(pid), 20, "the sandbox's shim to exit")
    # A bundle whose shim is gone is removed at the next start.
    gone = api.id("gone")
    gone_pid = _started_then_daemon_stopped(api, gone)
    os.kill(gone_pid, signal.SIGKILL)
    wait_for(lambda: not is_our_shim(gone_pid), 20, "the killed shim to go")
    api.daemon.start()
    api.reconnect()
    err = _error(api.status, gone)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert not (api.daemon.state / "io.containerd.runtime.v2.task" / "default" / gone).exists()


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


@pytest.fixture
def netns(api: Api) -> Iterator[Path]:
    """A network namespace pinned under /run/netns (``ip netns add``)."""
    require("ip")
    name = f"pcd-sb-{api.tag}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield Path("/run/netns") / name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _create(api: Api, sid: str, **options: Any) -> types_pb.Sandbox:
    sb = types_pb.Sandbox(sandbox_id=sid, sandboxer="shim")
    sb.runtime.name = RUNC
    sb.spec.type_url = SPEC_URL
    sb.spec.value = api.spec(sid, "/bin/sleep", "1000")
    api.store.Create(spb.StoreCreateRequest(sandbox=sb), metadata=NS)
    api.controller.Create(
        spb.ControllerCreateRequest(sandbox_id=sid, sandbox=sb, sandboxer="shim", **options),
        metadata=NS,
    )
    return sb


def test_create_options_rootfs_and_netns_reach_the_shim(api: Api, netns: Path) -> None:
    from pycontainerd.api.types import mount_pb2

    sid = api.id("opts")
    rootfs = [mount_pb2.Mount(type="bind", source=str(api.rootfs), options=["rbind", "ro"])]
    _create(api, sid, rootfs=rootfs, netns_path=str(netns))
    bundle_rootfs = api.daemon.state / "io.containerd.runtime.v2.task" / "default" / sid / "rootfs"
    try:
        _options_used(api, sid, bundle_rootfs, netns)
    finally:
        if _mounted(bundle_rootfs):  # a failed check must not leave the mount behind
            subprocess.run(["umount", "-l", str(bundle_rootfs)], check=False)


def _options_used(api: Api, sid: str, bundle_rootfs: Path, netns: Path) -> None:
    assert _mounted(bundle_rootfs)
    assert (bundle_rootfs / "bin" / "busybox").exists()
    info = api.status(sid).info
    assert info["rootfs"] == str(bundle_rootfs)
    assert info["netns_path"] == str(netns)
    pid = api.controller.Start(
        spb.ControllerStartRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    ).pid
    # The sandbox holds the namespace open: the shim has an fd on it.
    ino = netns.stat().st_ino
    fds = Path(f"/proc/{pid}/fd")
    assert any(os.stat(fd).st_ino == ino for fd in fds.iterdir())
    api.controller.Shutdown(
        spb.ControllerShutdownRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    )
    assert not _mounted(bundle_rootfs)
    wait_for(lambda: not is_our_shim(pid), 20, "the sandbox's shim to exit")


def test_create_options_that_cannot_be_used_are_refused(api: Api, tmp_path: Path) -> None:
    from pycontainerd.api.types import mount_pb2

    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    cases: list[tuple[str, dict[str, Any], str]] = [
        (api.id("nons"), {"netns_path": str(plain)}, "is not a network namespace"),
        (api.id("gone"), {"netns_path": str(tmp_path / "missing")}, "No such file or directory"),
        (
            api.id("badmnt"),
            {"rootfs": [mount_pb2.Mount(type="bind", source=str(tmp_path / "missing"))]},
            "failed to mount rootfs component",
        ),
    ]
    for sid, options, text in cases:
        err = _error(_create, api, sid, **options)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert (err.details() or "").startswith(f"failed to create sandbox {sid}: ")
        assert text in (err.details() or "")
        bundle = api.daemon.state / "io.containerd.runtime.v2.task" / "default" / sid
        assert not bundle.exists()
        err = _error(api.status, sid)
        assert err.code() == grpc.StatusCode.NOT_FOUND


def test_controller_update_as_containerd_2x(api: Api) -> None:
    sid = api.id("upd")
    sb = api.new_sandbox(sid)
    # No sandbox: containerd's plain error (Unknown).
    err = _error(
        api.controller.Update,
        spb.ControllerUpdateRequest(sandbox_id=sid, sandboxer="shim"),
        metadata=NS,
    )
    assert (err.code(), err.details()) == (grpc.StatusCode.UNKNOWN, "sandbox can not be nil")
    # No runtime in it: refused (containerd 2.1 dereferences it and crashes).
    err = _error(
        api.controller.Update,
        spb.ControllerUpdateRequest(
            sandbox_id=sid, sandboxer="shim", sandbox=types_pb.Sandbox(sandbox_id=sid)
        ),
        metadata=NS,
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == "invalid argument: sandbox runtime can not be nil"
    err = _error(
        api.controller.Update, spb.ControllerUpdateRequest(sandbox_id=sid, sandbox=sb), metadata=NS
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The shim controller accepts an update and changes nothing, as containerd's:
    # the record changes through the Store's Update.
    changed = types_pb.Sandbox()
    changed.CopyFrom(sb)
    changed.labels["app"] = "other"
    api.controller.Update(
        spb.ControllerUpdateRequest(
            sandbox_id=sid, sandboxer="shim", sandbox=changed, fields=["labels.app"]
        ),
        metadata=NS,
    )
    stored = api.store.Get(spb.StoreGetRequest(sandbox_id=sid), metadata=NS).sandbox
    assert dict(stored.labels) == {"app": "test"}
    assert api.status(sid).state == "SANDBOX_NOTREADY"
    api.controller.Shutdown(
        spb.ControllerShutdownRequest(sandbox_id=sid, sandboxer="shim"), metadata=NS
    )
