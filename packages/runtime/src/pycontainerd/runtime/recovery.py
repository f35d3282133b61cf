"""Restart recovery: the task manager reconnects to the shims an earlier run left behind.

Each bundle under the state directory is a task of a previous run. Its shim is
reconnected to when it answers; a bundle whose shim is gone is cleaned up as a
dead shim (``<shim> delete``, ``/tasks/exit`` unless already announced,
``/tasks/delete``); a bundle without ``shim-binary-path`` takes its shim from
the container's runtime, or is removed with the container gone. A task found
stopped whose exit was never seen gets its exit published once the shim had
:data:`EXIT_GRACE` to deliver a queued one (upstream #10390 lost it). Work
directories without a bundle are removed. Sandbox bundles are the sandbox
controller's and are left alone.

This module imports protobuf and the ttrpc client (never grpc).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from typing import TYPE_CHECKING, Final, Protocol

from pycontainerd.api.runtime.task.v2 import shim_pb2 as pb
from pycontainerd.api.ttrpc import Client
from pycontainerd.api.types.task import task_pb2 as task_types
from pycontainerd.core import identifiers, namespaces
from pycontainerd.core.errdefs import ContainerdError
from pycontainerd.runtime.bundle import (
    ADDRESS,
    SANDBOX_MARK,
    SHIM_BINARY_PATH,
    Bundle,
    delete_quietly,
    open_log,
)
from pycontainerd.runtime.shims import CONNECT_TIMEOUT, ShimTask, parse_address

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

    from pycontainerd.runtime.shims import Shims
    from pycontainerd.runtime.task_events import TaskEvents

__all__ = ["EXIT_GRACE", "RecoveredManager", "Recovery"]

log = logging.getLogger("pycontainerd.runtime")

EXIT_GRACE: Final = 20.0
"""After a restart, how long a stopped task's shim may take to deliver its queued exit.

Shims retry a failed forward after 1, 2, 3, 4 and 5 seconds; after this delay
a still missing exit is published by the manager.
"""


class RecoveredManager(Protocol):
    """What recovery uses of the task manager it restores (``manager.TaskManager``).

    Recovery fills the manager's task table and hands each reconnected task to
    the manager's own shim watch, so it reaches into the manager's private
    parts: they are declared here, where they are used.
    """

    @property
    def state_dir(self) -> Path: ...
    @property
    def root_dir(self) -> Path: ...
    @property
    def shims(self) -> Shims: ...
    @property
    def task_events(self) -> TaskEvents: ...
    @property
    def exit_grace(self) -> float: ...
    @property
    def _container_runtime(self) -> Callable[[str, str], Awaitable[str]] | None: ...
    @property
    def _tasks(self) -> dict[tuple[str, str], ShimTask]: ...

    def resolve_binary(self, runtime: str, runtime_path: str = "") -> str: ...
    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]: ...
    async def _watch_shim(self, t: ShimTask) -> None: ...
    async def _cleanup_dead(self, t: ShimTask) -> None: ...


class Recovery:
    """Restores the tasks of ``manager`` from the bundles on disk (once, at start)."""

    def __init__(self, manager: RecoveredManager) -> None:
        self._manager = manager

    async def restore(self) -> None:
        """Reconnect to the shims of the bundles an earlier run left behind."""
        for ns_dir in sorted(_subdirs(self._manager.state_dir)):
            ns = ns_dir.name
            log.info("loading tasks in namespace", extra={"namespace": ns})
            for path in sorted(_subdirs(ns_dir)):
                try:
                    await self._restore_one(ns, path)
                except Exception:
                    log.exception("failed to load task %s", path.name)
        for ns_dir in _subdirs(self._manager.root_dir):
            for work in _subdirs(ns_dir):
                if not (self._manager.state_dir / ns_dir.name / work.name).exists():
                    await asyncio.to_thread(shutil.rmtree, work, True)

    async def _restore_one(self, ns: str, path: Path) -> None:
        """Reconnect to (or clean up after) the shim of bundle ``path`` in ``ns``."""
        if not identifiers.is_valid(ns) or not identifiers.is_valid(path.name):
            return
        if await asyncio.to_thread(_remove_if_empty, path):
            return
        bundle = Bundle(self._manager.state_dir, self._manager.root_dir, ns, path.name)
        if bundle.read(SANDBOX_MARK):
            return  # a sandbox's shim: the sandbox controller's, not a task
        binary = bundle.read(SHIM_BINARY_PATH)
        if not binary:
            runtime = ""
            container_runtime = self._manager._container_runtime
            if container_runtime is not None:
                with namespaces.with_namespace(ns):
                    runtime = await container_runtime(ns, path.name)
            if not runtime:
                log.info("container of bundle %s is gone: removing it", path)
                await asyncio.to_thread(delete_quietly, bundle)
                return
            binary = self._manager.resolve_binary(runtime)
        address = bundle.read(ADDRESS)
        client: Client | None = None
        if address:
            with contextlib.suppress(ContainerdError, ValueError):
                client = await Client.connect(parse_address(address), timeout=CONNECT_TIMEOUT)
        # The runtime name is not kept in the bundle; the binary stands for it.
        t = ShimTask(
            namespace=ns,
            id=path.name,
            bundle=bundle,
            binary=binary,
            runtime="",
            client=client,
        )
        self._manager._tasks[(ns, t.id)] = t
        if client is not None:
            try:
                conn: pb.ConnectResponse = await t.task.call(
                    "Connect", pb.ConnectRequest(id=t.id), timeout=CONNECT_TIMEOUT
                )
                t.pid = conn.task_pid
                state = await t.state()
            except ContainerdError:
                client.close()
            else:
                t._log_fd = open_log(bundle)
                self._manager.shims.follow_log(t)
                t._watcher = self._manager._spawn(self._manager._watch_shim(t))
                if state.status == task_types.STOPPED and not bundle.exit_published:
                    self._manager._spawn(self._publish_missing_exit(t, state))
                return
        await self._manager._cleanup_dead(t)

    async def _publish_missing_exit(self, t: ShimTask, state: pb.StateResponse) -> None:
        """Publish a stopped task's exit if its shim does not deliver it within the grace."""
        await asyncio.sleep(self._manager.exit_grace)
        if self._manager._tasks.get((t.namespace, t.id)) is not t:
            return
        if await asyncio.to_thread(lambda: t.bundle.exit_published):
            return
        log.info("publishing exit the shim did not deliver", extra={"id": t.id})
        await self._manager.task_events.publish_exit(t.namespace, t.id, state)
        await asyncio.to_thread(t.bundle.mark_exit_published)


def _remove_if_empty(path: Path) -> bool:
    if any(path.iterdir()):
        return False
    path.rmdir()
    return True


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except FileNotFoundError:
        return []
