"""``containerd.runtime.sandbox.v1.Sandbox``: the sandbox API of the pyrunc shim.

containerd 2.x's ``shim`` sandbox controller starts a shim for a sandbox (the
shim's ``-id`` is the sandbox id, its bundle holds the sandbox's spec) and
drives it through this ttrpc service; containers created in the sandbox have
their tasks served by the same shim.

What a sandbox is here: the shim process itself, the way a VM-based runtime's
shim is its sandbox. The daemon starts one shim per sandbox (the group is the
sandbox id), so every other task this shim serves belongs to the sandbox.

- ``CreateSandbox`` records the sandbox (``SANDBOX_NOTREADY``); a second one
  with the same id is AlreadyExists. Its options are used as a task's are:
  ``rootfs`` mounts are mounted on ``<bundle>/rootfs`` (unmounted at
  shutdown, or when the create fails), and ``netns_path`` must name a network
  namespace (InvalidArgument otherwise), which the sandbox keeps open while it
  exists. Both show in the verbose status (``rootfs``, ``netns_path``).
- ``StartSandbox`` makes it ``SANDBOX_READY``; its pid is the shim's.
- ``StopSandbox`` stops the sandbox's tasks (SIGTERM to every process of
  each, SIGKILL after ``timeout_secs``; at once without a timeout), waits for
  their exits, and marks the sandbox ``SANDBOX_NOTREADY`` with its exit time
  (exit status 0); ``WaitSandbox`` returns then.
- ``ShutdownSandbox`` stops it if needed and forgets it: the shim exits once
  it serves no task and no sandbox.
- ``SandboxMetrics`` answers the cgroup metrics of the shim's cgroup.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from google.protobuf import any_pb2, timestamp_pb2

from pycontainerd.api.runtime.sandbox.v1 import sandbox_pb2 as pb
from pycontainerd.api.ttrpc import ServiceSpec
from pycontainerd.api.types import metrics_pb2, platform_pb2
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from pycontainerd.runtime.shim import cgroups
from pycontainerd.runtime.shim.service import _mount_rootfs, _unmount

if TYPE_CHECKING:
    from collections.abc import Callable

    from pycontainerd.api.ttrpc import CallContext
    from pycontainerd.runtime.shim.service import TaskService

__all__ = ["READY", "SANDBOX_SPEC", "STOPPED", "SandboxService"]

log = logging.getLogger(__name__)

SANDBOX_SPEC = ServiceSpec(
    "containerd.runtime.sandbox.v1.Sandbox",
    {
        "CreateSandbox": (pb.CreateSandboxRequest, pb.CreateSandboxResponse),
        "StartSandbox": (pb.StartSandboxRequest, pb.StartSandboxResponse),
        "Platform": (pb.PlatformRequest, pb.PlatformResponse),
        "StopSandbox": (pb.StopSandboxRequest, pb.StopSandboxResponse),
        "WaitSandbox": (pb.WaitSandboxRequest, pb.WaitSandboxResponse),
        "SandboxStatus": (pb.SandboxStatusRequest, pb.SandboxStatusResponse),
        "PingSandbox": (pb.PingRequest, pb.PingResponse),
        "ShutdownSandbox": (pb.ShutdownSandboxRequest, pb.ShutdownSandboxResponse),
        "SandboxMetrics": (pb.SandboxMetricsRequest, pb.SandboxMetricsResponse),
    },
)
"""The runtime sandbox service (9 methods, as upstream)."""

READY = "SANDBOX_READY"
STOPPED = "SANDBOX_NOTREADY"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}


def _ts(at: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(at * 1e9))
    return ts


@dataclass
class _Sandbox:
    id: str
    bundle: str
    rootfs: str = ""
    netns_path: str = ""
    netns_fd: int = -1
    state: str = STOPPED
    created_at: float = 0.0
    exited_at: float | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)


_NS_GET_NSTYPE = 0xB703  # ioctl(2) on a namespace file: its CLONE_NEW* type
_CLONE_NEWNET = 0x40000000


def _open_netns(path: str) -> int:
    """Open ``path`` as a network namespace (kept open by the sandbox).

    Raises:
        InvalidArgumentError: it is missing or not a network namespace.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        msg = f"netns_path {path}: {exc.strerror or exc}"
        raise InvalidArgumentError(msg) from exc
    try:
        kind = fcntl.ioctl(fd, _NS_GET_NSTYPE)
    except OSError:
        kind = 0
    if kind != _CLONE_NEWNET:
        os.close(fd)
        msg = f"netns_path {path} is not a network namespace"
        raise InvalidArgumentError(msg)
    return fd


def _close(sb: _Sandbox) -> None:
    if sb.netns_fd >= 0:
        with contextlib.suppress(OSError):
            os.close(sb.netns_fd)
        sb.netns_fd = -1


def _own_cgroup() -> str:
    """This process's cgroup path (v2, else the v1 memory controller's)."""
    found = ""
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if hierarchy == "0" and not controllers:
                found = found or path
            elif "memory" in controllers.split(","):
                return path
    return found


class SandboxService:
    """Serves the sandbox API for the sandbox this shim runs.

    Args:
        tasks: the shim's task service (the sandbox's tasks).
        on_change: called when a sandbox goes away (the shim may become idle).
        release: drops the start reservation of an id once it is created.
    """

    def __init__(
        self,
        tasks: TaskService,
        *,
        on_change: Callable[[], None] = lambda: None,
        release: Callable[[str], None] = lambda sandbox_id: None,
    ) -> None:
        self.tasks = tasks
        self.sandboxes: dict[str, _Sandbox] = {}
        self._on_change = on_change
        self._release = release

    def _get(self, sandbox_id: str) -> _Sandbox:
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            msg = f"sandbox {sandbox_id}"
            raise NotFoundError(msg)
        return sb

    async def CreateSandbox(  # noqa: N802
        self, ctx: CallContext, req: pb.CreateSandboxRequest
    ) -> pb.CreateSandboxResponse:
        """Record the sandbox (not ready until started), with its rootfs and netns."""
        try:
            if req.sandbox_id in self.sandboxes:
                msg = f"sandbox {req.sandbox_id}"
                raise AlreadyExistsError(msg)
            sb = _Sandbox(id=req.sandbox_id, bundle=req.bundle_path)
            if req.netns_path:
                sb.netns_path = req.netns_path
                sb.netns_fd = _open_netns(req.netns_path)
            if req.rootfs:
                target = os.path.join(req.bundle_path, "rootfs")
                try:
                    await asyncio.to_thread(_mount_rootfs, list(req.rootfs), target)
                except OSError as exc:
                    _close(sb)
                    msg = f"failed to mount rootfs component: {exc}"
                    raise InvalidArgumentError(msg) from exc
                except BaseException:
                    _close(sb)
                    raise
                sb.rootfs = target
            self.sandboxes[req.sandbox_id] = sb
        finally:
            self._release(req.sandbox_id)
        log.info("sandbox %s created (bundle %s)", req.sandbox_id, req.bundle_path)
        return pb.CreateSandboxResponse()

    async def StartSandbox(  # noqa: N802
        self, ctx: CallContext, req: pb.StartSandboxRequest
    ) -> pb.StartSandboxResponse:
        """Make the sandbox ready; its pid is the shim's."""
        sb = self._get(req.sandbox_id)
        if sb.state != READY:
            sb.state = READY
            sb.created_at = time.time()
            sb.exited_at = None
            sb.stopped.clear()
        return pb.StartSandboxResponse(pid=os.getpid(), created_at=_ts(sb.created_at))

    async def Platform(self, ctx: CallContext, req: pb.PlatformRequest) -> pb.PlatformResponse:  # noqa: N802
        """The platform the sandbox's containers run on (this machine's)."""
        self._get(req.sandbox_id)
        machine = platform.machine()
        return pb.PlatformResponse(
            platform=platform_pb2.Platform(
                os="linux", architecture=_ARCH.get(machine, machine), variant=""
            )
        )

    async def StopSandbox(  # noqa: N802
        self, ctx: CallContext, req: pb.StopSandboxRequest
    ) -> pb.StopSandboxResponse:
        """Stop every task of the sandbox, then mark it stopped."""
        sb = self._get(req.sandbox_id)
        if sb.state == READY:
            await self._stop_tasks(float(req.timeout_secs))
            sb.state = STOPPED
            sb.exited_at = time.time()
            sb.stopped.set()
        return pb.StopSandboxResponse()

    async def _stop_tasks(self, timeout: float) -> None:  # noqa: ASYNC109 - the request's timeout
        running = [
            c
            for c in self.tasks.containers.values()
            if c.init is not None and c.init.pid and not c.init.exited.is_set()
        ]
        if not running:
            return

        async def signal_all(sig: int) -> None:
            for c in running:
                with contextlib.suppress(Exception):
                    await c.runc.run("kill", "--all", c.id, str(int(sig)))

        async def exited() -> None:
            await asyncio.gather(*(c.init.exited.wait() for c in running if c.init))

        if timeout > 0:
            await signal_all(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await exited()
                    return
        await signal_all(signal.SIGKILL)
        await exited()

    async def WaitSandbox(  # noqa: N802
        self, ctx: CallContext, req: pb.WaitSandboxRequest
    ) -> pb.WaitSandboxResponse:
        """Wait until the sandbox is stopped."""
        sb = self._get(req.sandbox_id)
        await sb.stopped.wait()
        return pb.WaitSandboxResponse(exit_status=0, exited_at=_ts(sb.exited_at or time.time()))

    async def SandboxStatus(  # noqa: N802
        self, ctx: CallContext, req: pb.SandboxStatusRequest
    ) -> pb.SandboxStatusResponse:
        """State, pid and times; ``verbose`` adds the bundle and the tasks served."""
        sb = self._get(req.sandbox_id)
        resp = pb.SandboxStatusResponse(
            sandbox_id=sb.id, pid=os.getpid() if sb.state == READY else 0, state=sb.state
        )
        if sb.created_at:
            resp.created_at.CopyFrom(_ts(sb.created_at))
        if sb.exited_at is not None:
            resp.exited_at.CopyFrom(_ts(sb.exited_at))
        if req.verbose:
            resp.info["bundle"] = sb.bundle
            resp.info["tasks"] = ",".join(sorted(self.tasks.containers))
            if sb.rootfs:
                resp.info["rootfs"] = sb.rootfs
            if sb.netns_path:
                resp.info["netns_path"] = sb.netns_path
        return resp

    async def PingSandbox(self, ctx: CallContext, req: pb.PingRequest) -> pb.PingResponse:  # noqa: N802
        """OK while the sandbox is known."""
        self._get(req.sandbox_id)
        return pb.PingResponse()

    async def ShutdownSandbox(  # noqa: N802
        self, ctx: CallContext, req: pb.ShutdownSandboxRequest
    ) -> pb.ShutdownSandboxResponse:
        """Stop the sandbox if it runs and forget it; the shim exits once idle."""
        sb = self._get(req.sandbox_id)
        if sb.state == READY:
            await self._stop_tasks(0)
            sb.state = STOPPED
            sb.exited_at = time.time()
            sb.stopped.set()
        del self.sandboxes[sb.id]
        if sb.rootfs:
            await asyncio.to_thread(_unmount, sb.rootfs)
        _close(sb)
        self._on_change()
        return pb.ShutdownSandboxResponse()

    async def SandboxMetrics(  # noqa: N802
        self, ctx: CallContext, req: pb.SandboxMetricsRequest
    ) -> pb.SandboxMetricsResponse:
        """Cgroup metrics of the shim's cgroup (where the sandbox lives)."""
        sb = self._get(req.sandbox_id)
        try:
            type_url, data = cgroups.metrics(_own_cgroup())
        except FileNotFoundError as exc:
            raise UnavailableError(str(exc)) from exc
        return pb.SandboxMetricsResponse(
            metrics=metrics_pb2.Metric(
                timestamp=_ts(time.time()),
                id=sb.id,
                data=any_pb2.Any(type_url=type_url, value=data),
            )
        )
