"""A shim never blocks on a client's FIFOs, and never outlives a Create that failed.

Seen once under load: a ``ctr run --rm`` hung, and its shim outlived the
daemon with one thread in the kernel's ``wait_for_partner`` (an open(2) of the
task's stdin FIFO whose other end nobody opened) and the task's rootfs still
mounted. These tests talk to a real shim over ttrpc (no daemon: the event
address is dead), with real runc and a bind-mounted busybox rootfs:

* stdio FIFOs whose other ends nobody ever opens hold no shim thread, and
  kill/delete finish and the shim exits;
* a Create its caller gives up on (its timeout passes, or its connection
  closes) while ``runc create`` still runs is finished and then undone: no
  runc container, no mount, and the idle shim exits;
* a Delete that arrives while the Create is in progress waits for it, so it
  deletes what the Create made (the daemon deletes a task whose Create it
  abandoned).

``runc create`` is held back by a wrapper (the runc options' ``BinaryName``)
that waits for a gate file, so the tests decide when it proceeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.api.runtime.task.v2 import shim_pb2 as pb
from pycontainerd.api.ttrpc import Client, ServiceClient
from pycontainerd.api.types import mount_pb2
from pycontainerd.api.types.runc.options import oci_pb2
from pycontainerd.core.errdefs import ContainerdError, NotFoundError
from pycontainerd.runtime.shim.service import TASK_SPEC
from pycontainerd.runtime.shim.wire import RUNC_OPTIONS
from pycontainerd.runtime.testing import install_shim, is_our_shim, make_rootfs, require

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

pytestmark = [pytest.mark.system]

NS = "abandon"
ENV = {"PYCONTAINERD_SHIM_LINGER": "0.1", "PYCONTAINERD_SHIM_RESERVATION_TTL": "60"}


async def _until(cond: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 20.0
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


class Rig:
    """A state directory, a bundle with a spec, a rootfs to bind-mount, and the shim."""

    def __init__(self, root: Path, task_id: str) -> None:
        self.root = root
        self.id = task_id
        self.state = root / "state"
        self.bundle = self.state / "io.containerd.runtime.v2.task" / NS / task_id
        self.bundle.mkdir(parents=True)
        self.runc_root = self.state / "runc" / NS
        self.gate = root / "gate"
        self.image = make_rootfs(root / "image")
        (root / "bin").mkdir()
        self.binary = install_shim(root / "bin")
        self.wrapper = root / "bin" / "gated-runc"
        self.wrapper.write_text(
            "#!/bin/sh\n"
            'for a in "$@"; do\n'
            f'  if [ "$a" = create ]; then while [ ! -e {self.gate} ]; do\n'
            # A test that failed before opening the gate removed its directory.
            f"    [ -d {root} ] || exit 1; sleep 0.02; done; fi\n"
            "done\n"
            'exec runc "$@"\n'
        )
        self.wrapper.chmod(0o755)
        self.pid = 0

    def spec(self, *args: str) -> None:
        subprocess.run(["runc", "spec"], cwd=self.bundle, check=True)
        path = self.bundle / "config.json"
        spec = json.loads(path.read_text())
        spec["process"]["terminal"] = False
        spec["process"]["args"] = list(args)
        spec["root"] = {"path": "rootfs", "readonly": False}
        spec["linux"]["cgroupsPath"] = f"/pcd-abandon-{self.id}"
        path.write_text(json.dumps(spec))

    def start(self) -> str:
        res = subprocess.run(
            [
                str(self.binary),
                "-namespace",
                NS,
                "-address",
                str(self.root / "nobody.sock"),
                "-publish-binary",
                "/bin/false",
                "-id",
                self.id,
                "start",
            ],
            cwd=self.bundle,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=60,
            env={**os.environ, **ENV},
        )
        assert res.returncode == 0, res.stderr
        self.pid = int((self.bundle / "shim.pid").read_text())
        return res.stdout.decode()

    def request(self, stdin: str = "", stdout: str = "", stderr: str = "") -> pb.CreateTaskRequest:
        opts = oci_pb2.Options(binary_name=str(self.wrapper))
        req = pb.CreateTaskRequest(
            id=self.id,
            bundle=str(self.bundle),
            rootfs=[mount_pb2.Mount(type="bind", source=str(self.image), options=["rbind", "rw"])],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        req.options.type_url = RUNC_OPTIONS
        req.options.value = opts.SerializeToString()
        return req

    def runc_containers(self) -> list[str]:
        if not self.runc_root.exists():
            return []
        res = subprocess.run(
            ["runc", "--root", str(self.runc_root), "list", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        return res.stdout.split()

    def blocked_in_fifo_open(self) -> list[str]:
        """The shim's threads waiting in open(2) for a FIFO's other end."""
        found = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                if (task / "wchan").read_text().strip() == "wait_for_partner":
                    found.append(task.name)
        return found

    def cleanup(self) -> None:
        with contextlib.suppress(OSError):
            self.gate.touch()  # a wrapper still held lets go
        if self.pid and is_our_shim(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        for cid in self.runc_containers():
            runc = ["runc", "--root", str(self.runc_root)]
            subprocess.run([*runc, "delete", "-f", cid], check=False)
        rootfs = self.bundle / "rootfs"
        if _mounted(rootfs):
            subprocess.run(["umount", "-l", str(rootfs)], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    require("runc", "busybox")
    root = Path(tempfile.mkdtemp(prefix="ab", dir="/tmp"))
    r = Rig(root, f"t{os.getpid()}-{request.node.name[-24:].strip('[]-')}".replace("[", "-"))
    try:
        yield r
    finally:
        r.cleanup()


async def test_fifos_nobody_opens_hold_no_thread_and_delete_finishes(rig: Rig) -> None:
    rig.spec("/bin/cat")  # waits for input that never comes
    rig.gate.touch()
    fifos = {}
    for name in ("stdin", "stdout", "stderr"):
        path = rig.root / name
        os.mkfifo(path)
        fifos[name] = str(path)
    address = rig.start()
    async with await Client.connect(address, timeout=10) as client:
        task = ServiceClient(client, TASK_SPEC, namespace=NS)
        created = await task.call("Create", rig.request(**fifos), timeout=60)
        assert created.pid > 0
        await task.call("Start", pb.StartRequest(id=rig.id), timeout=60)
        # A blocked open shows within a moment of Create; watch for a while.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert rig.blocked_in_fifo_open() == [], "a shim thread waits for a FIFO partner"
            await asyncio.sleep(0.05)
        await task.call("Kill", pb.KillRequest(id=rig.id, signal=9), timeout=30)
        waited = await task.call("Wait", pb.WaitRequest(id=rig.id), timeout=30)
        assert waited.exit_status == 137
        await task.call("Delete", pb.DeleteRequest(id=rig.id), timeout=30)
        await task.call("Shutdown", pb.ShutdownRequest(id=rig.id), timeout=30)
    await _until(lambda: not is_our_shim(rig.pid), "the shim to exit")
    assert not _mounted(rig.bundle / "rootfs")
    assert rig.runc_containers() == []


@pytest.mark.parametrize("how", ["timeout", "disconnect"])
async def test_a_create_its_caller_gives_up_on_is_undone_and_the_shim_exits(
    rig: Rig, how: str
) -> None:
    rig.spec("/bin/sleep", "600")
    address = rig.start()
    client = await Client.connect(address, timeout=10)
    try:
        task = ServiceClient(client, TASK_SPEC, namespace=NS)
        if how == "timeout":
            with pytest.raises(ContainerdError):
                await task.call("Create", rig.request(), timeout=1.0)
        else:
            pending = asyncio.ensure_future(task.call("Create", rig.request()))
            await _until(lambda: _mounted(rig.bundle / "rootfs"), "the rootfs mount")
            client.close()
            with pytest.raises((ContainerdError, OSError)):
                await pending
    finally:
        client.close()
    # The Create goes on without its caller: it mounts and waits at the gate.
    await _until(lambda: _mounted(rig.bundle / "rootfs"), "the rootfs mount")
    rig.gate.touch()  # now it creates the container, which nobody will ever use
    await _until(lambda: not is_our_shim(rig.pid), "the shim to exit")
    assert rig.runc_containers() == []
    assert not _mounted(rig.bundle / "rootfs")


async def test_delete_during_create_waits_for_it_and_deletes_what_it_made(rig: Rig) -> None:
    rig.spec("/bin/sleep", "600")
    address = rig.start()
    async with await Client.connect(address, timeout=10) as client:
        task = ServiceClient(client, TASK_SPEC, namespace=NS)
        create = asyncio.ensure_future(task.call("Create", rig.request(), timeout=60))
        await _until(lambda: _mounted(rig.bundle / "rootfs"), "the rootfs mount")
        delete = asyncio.ensure_future(task.call("Delete", pb.DeleteRequest(id=rig.id), timeout=60))
        done, _ = await asyncio.wait({delete}, timeout=0.5)
        assert not done, "Delete did not wait for the Create in progress"
        rig.gate.touch()
        created = await create
        deleted = await delete
        assert deleted.pid == created.pid > 0
        assert rig.runc_containers() == []
        with pytest.raises(NotFoundError):
            await task.call("State", pb.StateRequest(id=rig.id), timeout=30)
        await task.call("Shutdown", pb.ShutdownRequest(id=rig.id), timeout=30)
    await _until(lambda: not is_our_shim(rig.pid), "the shim to exit")
    assert not _mounted(rig.bundle / "rootfs")
