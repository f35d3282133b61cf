"""The ``shim`` sandbox controller (``io.containerd.sandbox.controller.v1.shim``).

A sandbox is served by a runtime v2 shim through its ttrpc
``containerd.runtime.sandbox.v1.Sandbox`` service, as containerd 2.x's shim
controller does:

- ``create`` makes a bundle ``<state>/io.containerd.runtime.v2.task/<ns>/<id>``
  with the sandbox's spec as ``config.json``, starts the runtime's shim for it
  (``-id <sandbox id>``; our pyrunc shim gets a shim of its own per sandbox)
  and calls ``CreateSandbox``; a failure shuts the shim down and removes the
  bundle.
- ``start``, ``platform``, ``stop``, ``wait``, ``status``, ``shutdown`` and
  ``metrics`` call the shim. Tasks of containers whose ``sandbox_id`` names a
  running sandbox are created in the sandbox's shim (``TaskManager.create``).
- A shim that dies is noticed: ``wait`` returns (exit status 255, as for a
  task whose shim died) and ``status`` answers ``SANDBOX_NOTREADY`` with the
  exit time and ``info["reason"] = "shim exited"``, until ``shutdown``
  forgets the sandbox.

After a daemon restart the controller reconnects to the shims of the sandbox
bundles it finds (``sandbox-shim`` marker; the task manager's restore leaves
them alone) and keeps each whose shim still knows the sandbox (``PingSandbox``);
bundles of gone shims are removed.

This module imports protobuf and the ttrpc client, never grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pycontainerd.api.runtime.sandbox.v1 import sandbox_pb2 as pb
from pycontainerd.api.runtime.task.v2 import shim_pb2 as task_pb
from pycontainerd.api.ttrpc import Client, ServiceClient
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    NotFoundError,
    UnavailableError,
    UnknownError,
)
from pycontainerd.runtime.bundle import ADDRESS, SANDBOX_MARK, SHIM_BINARY_PATH, Bundle
from pycontainerd.runtime.shim.sandbox import SANDBOX_SPEC, STOPPED
from pycontainerd.runtime.shims import TASK_SPEC, UNKNOWN_EXIT, ShimTask

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path

    from google.protobuf import any_pb2

    from pycontainerd.api.types import metrics_pb2, mount_pb2, platform_pb2
    from pycontainerd.runtime.manager import TaskManager

__all__ = ["SHIM_API_VERSION", "ControllerStatus", "ExitStatus", "ShimController", "StartResult"]

log = logging.getLogger("pycontainerd.runtime.sandbox")

SHIM_API_VERSION: Final = 2
"""The shim protocol version reported with a sandbox's address (our shims print plain addresses)."""
_SHUTDOWN_TIMEOUT: Final = 5.0


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """A sandbox's exit: status and time (ns since the epoch)."""

    exit_status: int
    exited_at_ns: int


@dataclass(frozen=True, slots=True)
class StartResult:
    """What ``start`` answers."""

    pid: int
    created_at_ns: int
    address: str
    version: int


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    """What ``status`` answers."""

    sandbox_id: str
    pid: int
    state: str
    info: Mapping[str, str]
    created_at_ns: int
    exited_at_ns: int
    extra: any_pb2.Any | None
    address: str
    version: int


@dataclass(eq=False)
class _Running:
    """A sandbox and the shim serving it."""

    namespace: str
    id: str
    bundle: Bundle
    shim: ShimTask
    died: asyncio.Future[ExitStatus] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    forgotten: bool = False
    watcher: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return self.bundle.read("address")

    def api(self) -> ServiceClient:
        if self.shim.client is None or self.died.done():
            msg = f"sandbox {self.id} shim is not running"
            raise UnavailableError(msg)
        return ServiceClient(self.shim.client, SANDBOX_SPEC, namespace=self.namespace)


class ShimController:
    """Sandboxes served by runtime v2 shims, across namespaces.

    Args:
        manager: the runtime v2 task manager (bundles, shim binaries and starts);
            the controller tells it where a sandbox's shim listens.
    """

    def __init__(self, manager: TaskManager) -> None:
        self._manager = manager
        self._sandboxes: dict[tuple[str, str], _Running] = {}
        manager.sandbox_socket = self._socket

    async def restore(self) -> None:
        """Reconnect to the sandbox shims an earlier run left (or drop their bundles)."""
        state = self._manager.state_dir
        for ns_dir in sorted(_subdirs(state)):
            for path in sorted(_subdirs(ns_dir)):
                if (path / SANDBOX_MARK).exists():
                    try:
                        await self._restore_one(ns_dir.name, path.name)
                    except Exception:
                        log.exception("failed to load sandbox %s", path.name)

    async def _restore_one(self, namespace: str, sandbox_id: str) -> None:
        manager = self._manager
        bundle = Bundle(manager.state_dir, manager.root_dir, namespace, sandbox_id)
        address = bundle.read(ADDRESS)
        client: Client | None = None
        if address:
            with contextlib.suppress(ContainerdError, ValueError, OSError):
                client = await Client.connect(address, timeout=_SHUTDOWN_TIMEOUT)
        shim = ShimTask(
            namespace=namespace,
            id=sandbox_id,
            bundle=bundle,
            binary=bundle.read(SHIM_BINARY_PATH),
            runtime="",
            client=client,
        )
        sb = _Running(namespace=namespace, id=sandbox_id, bundle=bundle, shim=shim)
        if client is not None:
            try:
                await sb.api().call(
                    "PingSandbox", pb.PingRequest(sandbox_id=sandbox_id), timeout=_SHUTDOWN_TIMEOUT
                )
            except ContainerdError:
                client.close()
            else:
                log.info("reconnected to sandbox", extra={"id": sandbox_id, "namespace": namespace})
                self._sandboxes[(namespace, sandbox_id)] = sb
                sb.watcher = asyncio.ensure_future(self._watch(sb))
                return
        log.info("removing bundle of a gone sandbox", extra={"id": sandbox_id})
        await asyncio.to_thread(bundle.delete)

    def _socket(self, namespace: str, sandbox_id: str) -> str | None:
        sb = self._sandboxes.get((namespace, sandbox_id))
        if sb is None or sb.died.done():
            return None
        return sb.address.removeprefix("unix://") or None

    def _get(self, namespace: str, sandbox_id: str) -> _Running:
        sb = self._sandboxes.get((namespace, sandbox_id))
        if sb is None:
            msg = f"sandbox {sandbox_id}"
            raise NotFoundError(msg)
        return sb

    async def create(
        self,
        namespace: str,
        sandbox_id: str,
        *,
        runtime: str,
        runtime_options: any_pb2.Any | None = None,
        spec: bytes = b"",
        rootfs: Iterable[mount_pb2.Mount] = (),
        options: any_pb2.Any | None = None,
        netns_path: str = "",
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        """Start the runtime's shim for the sandbox and create the sandbox in it.

        Raises:
            AlreadyExistsError: ``sandbox <id> already running``.
            InvalidArgumentError: a bad id or runtime name.
            UnknownError: the shim could not be started or refused the sandbox.
        """
        key = (namespace, sandbox_id)
        current = self._sandboxes.get(key)
        if current is not None and not current.died.done():
            msg = f"sandbox {sandbox_id} already running"
            raise AlreadyExistsError(msg)
        if current is not None:
            await self._forget(current)
        if not runtime:
            msg = f"failed to start new shim for sandbox {sandbox_id}: no runtime name"
            raise UnknownError(msg)
        binary = self._manager.resolve_binary(runtime)
        bundle = await asyncio.to_thread(
            Bundle.create,
            self._manager.state_dir,
            self._manager.root_dir,
            namespace,
            sandbox_id,
            spec or b"{}",
        )
        await asyncio.to_thread(bundle.write, SANDBOX_MARK, sandbox_id)
        opts = b"" if runtime_options is None else runtime_options.SerializeToString()
        try:
            shim = await self._manager.start_shim(
                namespace, sandbox_id, bundle, binary, opts, grouping="container"
            )
        except ContainerdError as exc:
            await asyncio.to_thread(bundle.delete)
            msg = f"failed to start new shim for sandbox {sandbox_id}: {exc.message}"
            raise type(exc)(msg) from exc
        except BaseException:
            await asyncio.to_thread(bundle.delete)
            raise
        sb = _Running(namespace=namespace, id=sandbox_id, bundle=bundle, shim=shim)
        request = pb.CreateSandboxRequest(
            sandbox_id=sandbox_id,
            bundle_path=str(bundle.path),
            rootfs=list(rootfs),
            netns_path=netns_path,
            annotations=dict(annotations or {}),
        )
        if options is not None:
            request.options.CopyFrom(options)
        try:
            await sb.api().call("CreateSandbox", request)
        except BaseException as exc:
            await self._cleanup_shim(sb)
            if isinstance(exc, ContainerdError):
                msg = f"failed to create sandbox {sandbox_id}: {exc.message}"
                raise type(exc)(msg) from exc
            raise
        self._sandboxes[key] = sb
        sb.watcher = asyncio.ensure_future(self._watch(sb))

    async def start(self, namespace: str, sandbox_id: str) -> StartResult:
        """Start a created sandbox.

        Raises:
            UnknownError: ``unable to find sandbox "<id>"`` (upstream's text).
            ContainerdError: the shim refused (``failed to start sandbox <id>: ...``).
        """
        sb = self._sandboxes.get((namespace, sandbox_id))
        if sb is None or sb.died.done():
            msg = f'unable to find sandbox "{sandbox_id}"'
            raise UnknownError(msg)
        try:
            resp: pb.StartSandboxResponse = await sb.api().call(
                "StartSandbox", pb.StartSandboxRequest(sandbox_id=sandbox_id)
            )
        except ContainerdError as exc:
            await self._cleanup_shim(sb)
            self._sandboxes.pop((namespace, sandbox_id), None)
            msg = f"failed to start sandbox {sandbox_id}: {exc.message}"
            raise type(exc)(msg) from exc
        return StartResult(
            pid=resp.pid,
            created_at_ns=resp.created_at.ToNanoseconds(),
            address=sb.address,
            version=SHIM_API_VERSION,
        )

    async def platform(self, namespace: str, sandbox_id: str) -> platform_pb2.Platform:
        """The sandbox's platform, from its shim."""
        sb = self._get(namespace, sandbox_id)
        resp: pb.PlatformResponse = await sb.api().call(
            "Platform", pb.PlatformRequest(sandbox_id=sandbox_id)
        )
        return resp.platform

    async def stop(self, namespace: str, sandbox_id: str, timeout_secs: int = 0) -> None:
        """Stop the sandbox's tasks; a sandbox that is gone or unreachable is stopped already."""
        sb = self._sandboxes.get((namespace, sandbox_id))
        if sb is None or sb.died.done():
            return
        try:
            await sb.api().call(
                "StopSandbox",
                pb.StopSandboxRequest(sandbox_id=sandbox_id, timeout_secs=timeout_secs),
            )
        except (NotFoundError, UnavailableError):
            return
        except ContainerdError as exc:
            msg = f"failed to stop sandbox: {exc.message}"
            raise type(exc)(msg) from exc

    async def wait(self, namespace: str, sandbox_id: str) -> ExitStatus:
        """Wait until the sandbox stops or its shim dies."""
        sb = self._get(namespace, sandbox_id)
        if sb.died.done():
            return sb.died.result()
        call = asyncio.ensure_future(
            sb.api().call("WaitSandbox", pb.WaitSandboxRequest(sandbox_id=sandbox_id))
        )
        died = asyncio.ensure_future(asyncio.shield(sb.died))
        try:
            done, _ = await asyncio.wait({call, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
        if call in done and call.exception() is None:
            resp: pb.WaitSandboxResponse = call.result()
            return ExitStatus(resp.exit_status, resp.exited_at.ToNanoseconds())
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
        if not sb.died.done():
            await asyncio.shield(sb.died)
        return sb.died.result()

    async def status(
        self, namespace: str, sandbox_id: str, *, verbose: bool = False
    ) -> ControllerStatus:
        """The sandbox's state from its shim (``SANDBOX_NOTREADY`` once the shim died).

        Raises:
            NotFoundError: no such sandbox (never created, or shut down).
        """
        sb = self._get(namespace, sandbox_id)
        if sb.died.done():
            exit_ = sb.died.result()
            return ControllerStatus(
                sandbox_id=sandbox_id,
                pid=0,
                state=STOPPED,
                info={"reason": "shim exited"},
                created_at_ns=0,
                exited_at_ns=exit_.exited_at_ns,
                extra=None,
                address="",
                version=0,
            )
        resp: pb.SandboxStatusResponse = await sb.api().call(
            "SandboxStatus", pb.SandboxStatusRequest(sandbox_id=sandbox_id, verbose=verbose)
        )
        return ControllerStatus(
            sandbox_id=resp.sandbox_id,
            pid=resp.pid,
            state=resp.state,
            info=dict(resp.info),
            created_at_ns=resp.created_at.ToNanoseconds() if resp.HasField("created_at") else 0,
            exited_at_ns=resp.exited_at.ToNanoseconds() if resp.HasField("exited_at") else 0,
            extra=resp.extra if resp.HasField("extra") else None,
            address=sb.address,
            version=SHIM_API_VERSION,
        )

    async def shutdown(self, namespace: str, sandbox_id: str) -> None:
        """Shut the sandbox down in its shim and forget it (its bundle goes too).

        Raises:
            NotFoundError: no such sandbox.
        """
        sb = self._get(namespace, sandbox_id)
        if not sb.died.done():
            try:
                await sb.api().call(
                    "ShutdownSandbox", pb.ShutdownSandboxRequest(sandbox_id=sandbox_id)
                )
            except (NotFoundError, UnavailableError):
                pass
            except ContainerdError as exc:
                msg = f"failed to shutdown sandbox: {exc.message}"
                raise type(exc)(msg) from exc
        await self._forget(sb)

    async def metrics(self, namespace: str, sandbox_id: str) -> metrics_pb2.Metric:
        """The shim's metrics for the sandbox."""
        sb = self._get(namespace, sandbox_id)
        resp: pb.SandboxMetricsResponse = await sb.api().call(
            "SandboxMetrics", pb.SandboxMetricsRequest(sandbox_id=sandbox_id)
        )
        return resp.metrics

    async def aclose(self) -> None:
        """Disconnect from every sandbox shim (they keep running)."""
        for sb in list(self._sandboxes.values()):
            sb.forgotten = True
            if sb.watcher is not None:
                sb.watcher.cancel()
            if sb.shim.client is not None:
                sb.shim.client.close()
        self._sandboxes.clear()

    # -- internals ----------------------------------------------------------

    async def _watch(self, sb: _Running) -> None:
        """Notice the shim's death (its connection drops while we still hold the sandbox)."""
        if sb.shim.client is None:
            return
        await sb.shim.client.wait_closed()
        if sb.forgotten:
            return
        log.warning("sandbox shim disconnected", extra={"id": sb.id, "namespace": sb.namespace})
        if not sb.died.done():
            sb.died.set_result(ExitStatus(UNKNOWN_EXIT, time.time_ns()))

    async def _cleanup_shim(self, sb: _Running) -> None:
        """Upstream's cleanupShim: ShutdownSandbox, then the shim goes and the bundle with it."""
        sb.forgotten = True
        client = sb.shim.client
        if client is not None and not client.closed:
            with contextlib.suppress(Exception):
                await sb.api().call(
                    "ShutdownSandbox",
                    pb.ShutdownSandboxRequest(sandbox_id=sb.id),
                    timeout=_SHUTDOWN_TIMEOUT,
                )
            with contextlib.suppress(Exception):
                await ServiceClient(client, TASK_SPEC, namespace=sb.namespace).call(
                    "Shutdown", task_pb.ShutdownRequest(id=sb.id), timeout=_SHUTDOWN_TIMEOUT
                )
            client.close()
        await asyncio.to_thread(sb.bundle.delete)

    async def _forget(self, sb: _Running) -> None:
        self._sandboxes.pop((sb.namespace, sb.id), None)
        if sb.watcher is not None:
            sb.watcher.cancel()
        await self._cleanup_shim(sb)
        if not sb.died.done():
            sb.died.set_result(ExitStatus(0, time.time_ns()))


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []
