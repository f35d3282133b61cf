"""The runtime v2 task manager: the tasks of every namespace, each served by a shim.

For each task the manager makes a bundle (:mod:`.bundle`), has a shim started
in it and connects over ttrpc (:mod:`.shims`), and calls the shim's
``containerd.task.v2.Task`` service. Shims forward their own task events
(``/tasks/create``, ``/tasks/exit``, ...) to the daemon's ttrpc Events service,
which puts them on the exchange; the manager publishes only for shims that died
(``/tasks/exit`` and ``/tasks/delete``, as upstream's dead-shim cleanup;
:mod:`.task_events`).

Exits are announced once. The manager watches ``/tasks/exit`` on the exchange
and records in the bundle (``exit-published``) that a task's exit went out.
A shim that dies, before or after a daemon restart, is cleaned up with
``<shim> delete``; its ``/tasks/exit`` is published only if none was seen
(upstream #2299 announced it twice). After a restart the manager reconnects
to the shims an earlier run left (:mod:`.recovery`).

This module is an edge of the runtime: it imports protobuf and the ttrpc
client (never grpc).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from pycontainerd.api.runtime.task.v2 import shim_pb2 as pb
from pycontainerd.core.errdefs import ContainerdError, NotFoundError
from pycontainerd.runtime.bundle import Bundle, check_spec, delete_quietly
from pycontainerd.runtime.recovery import EXIT_GRACE, Recovery
from pycontainerd.runtime.shims import SHUTDOWN_TIMEOUT, Launch, Shims, ShimTask
from pycontainerd.runtime.task_events import TaskEvents

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from pathlib import Path

    from google.protobuf import any_pb2

    from pycontainerd.api.types import mount_pb2
    from pycontainerd.core.events import EventBus

__all__ = ["TaskManager"]

log = logging.getLogger("pycontainerd.runtime")


class TaskManager:
    """Tasks of every namespace, each served by a shim (``io.containerd.runtime.v2.task``).

    Args:
        state_dir: ``<state>/io.containerd.runtime.v2.task``.
        root_dir: ``<root>/io.containerd.runtime.v2.task``.
        grpc_address: the daemon's gRPC socket (shims get it as ``-address``).
        ttrpc_address: the daemon's ttrpc socket (``TTRPC_ADDRESS`` of shims).
        events: the event exchange.
        shims: runtime name -> shim binary (name or absolute path); the
            plugin's ``shims`` table (``DEFAULT_SHIMS`` when None).
        resolve: a further resolver asked when ``shims`` has no entry
            (the ``pycontainerd_runtime_shim_binary`` hook).
        env: builds a shim's base environment (``opt`` puts its ``bin`` first).
        container_runtime: the runtime name of a container, for bundles
            without ``shim-binary-path`` at restore ("" when the container is gone).
        debug: start shims with ``-debug``.
        exit_grace: see :data:`EXIT_GRACE`.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        root_dir: Path,
        grpc_address: str,
        ttrpc_address: str,
        events: EventBus,
        shims: Mapping[str, str] | None = None,
        resolve: Callable[[str], str | None] | None = None,
        env: Callable[[], dict[str, str]] | None = None,
        container_runtime: Callable[[str, str], Awaitable[str]] | None = None,
        debug: bool = False,
        exit_grace: float = EXIT_GRACE,
    ) -> None:
        self.state_dir = state_dir
        self.root_dir = root_dir
        self.events = events
        self.shims = Shims(
            grpc_address=grpc_address,
            ttrpc_address=ttrpc_address,
            binaries=shims,
            resolve=resolve,
            env=env,
            debug=debug,
        )
        """Resolves runtimes to shim binaries and starts, follows and deletes shims."""
        self.task_events = TaskEvents(events)
        """The ``/tasks/exit`` watch and the events the manager itself announces."""
        self._container_runtime = container_runtime
        self.exit_grace = exit_grace
        self._tasks: dict[tuple[str, str], ShimTask] = {}
        self._creating: set[tuple[str, str]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._exit_watch: asyncio.Task[None] | None = None
        self._closing = False
        self.sandbox_socket: Callable[[str, str], str | None] = lambda _ns, _sid: None
        """The socket of the shim serving a sandbox (set by the sandbox controller)."""

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Watch exits, then reconnect to the shims of an earlier run (or clean them up)."""
        self.state_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.root_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        ready = asyncio.Event()
        self._exit_watch = asyncio.create_task(
            self.task_events.watch_exits(ready, self._exit_published)
        )
        await ready.wait()
        await Recovery(self).restore()

    async def aclose(self) -> None:
        """Disconnect from every shim; the shims and their tasks keep running."""
        self._closing = True
        for task in list(self._background):
            task.cancel()
        if self._exit_watch is not None:
            self._exit_watch.cancel()
        for t in list(self._tasks.values()):
            self.shims.disconnect(t)
        await self.shims.aclose()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._exit_watch is not None:
            with contextlib.suppress(BaseException):
                await self._exit_watch
        self._tasks.clear()

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- lookups ------------------------------------------------------------

    def get(self, namespace: str, task_id: str) -> ShimTask:
        """The task ``task_id`` of ``namespace``.

        Raises:
            NotFoundError: no such task (``task <id> not found``, upstream's text).
        """
        t = self._tasks.get((namespace, task_id))
        if t is None or t.dead.done():
            msg = f"task {task_id} not found"
            raise NotFoundError(msg)
        return t

    def tasks(self, namespace: str | None = None) -> list[ShimTask]:
        """Live tasks of ``namespace`` (all namespaces when ``None``), by id."""
        found = [
            t
            for (ns, _), t in self._tasks.items()
            if (namespace is None or ns == namespace) and not t.dead.done()
        ]
        return sorted(found, key=lambda t: (t.namespace, t.id))

    def exists(self, namespace: str, task_id: str) -> bool:
        """Whether a task is known or being created."""
        key = (namespace, task_id)
        return key in self._creating or key in self._tasks

    # -- shim binaries ------------------------------------------------------

    def shim_env(self, namespace: str) -> dict[str, str]:
        """A shim's environment (:meth:`.shims.Shims.shim_env`)."""
        return self.shims.shim_env(namespace)

    def resolve_binary(self, runtime: str, runtime_path: str = "") -> str:
        """The shim executable for ``runtime`` (:meth:`.shims.Shims.resolve_binary`)."""
        return self.shims.resolve_binary(runtime, runtime_path)

    async def plugin_info(self, type_url: str, value: bytes) -> tuple[str, bytes]:
        """Introspection ``PluginInfo`` extra: a runtime's ``-info`` (:mod:`..runtime_info`)."""
        from pycontainerd.runtime.runtime_info import plugin_info

        return await plugin_info(self, type_url, value)

    # -- create / delete ----------------------------------------------------

    async def create(
        self,
        namespace: str,
        task_id: str,
        *,
        spec: bytes,
        runtime: str,
        runtime_path: str = "",
        runtime_options: any_pb2.Any | None = None,
        task_options: any_pb2.Any | None = None,
        rootfs: Iterable[mount_pb2.Mount] = (),
        stdin: str = "",
        stdout: str = "",
        stderr: str = "",
        terminal: bool = False,
        sandbox_id: str = "",
    ) -> ShimTask:
        """Make the bundle, start the shim and create the task in it.

        A task of a container in a running sandbox is served by the sandbox's
        shim; without one (no such sandbox, or not started) a shim starts as usual.

        Raises:
            AlreadyExistsError: the task exists (``task <id>: already exists``).
            InvalidArgumentError: a bad id or a spec that is not a JSON object.
            UnknownError: the shim could not be started (``failed to start shim: ...``).
            ContainerdError: the shim refused the task (``failed to create shim task: ...``).
        """
        from pycontainerd.core.errdefs import AlreadyExistsError

        key = (namespace, task_id)
        if self.exists(namespace, task_id):
            msg = f"task {task_id}: already exists"
            raise AlreadyExistsError(msg)
        check_spec(spec)
        self._creating.add(key)
        try:
            binary = self.resolve_binary(runtime, runtime_path)
        except ContainerdError as exc:
            self._creating.discard(key)
            msg = f"failed to start shim: {exc.message}"
            raise type(exc)(msg) from exc
        try:
            bundle = await asyncio.to_thread(
                Bundle.create, self.state_dir, self.root_dir, namespace, task_id, spec
            )
            # As upstream: the task's options when it has some, else the container's
            # runtime options, both for ``start`` (stdin) and for the shim's Create.
            opts = task_options if task_options is not None and task_options.value else None
            opts = opts or runtime_options
            options = b"" if opts is None else opts.SerializeToString()
            try:
                join = (self.sandbox_socket(namespace, sandbox_id) or "") if sandbox_id else ""
                t = await self.shims.start(
                    bundle, Launch(namespace, task_id, binary, options, join=join), runtime
                )
            except BaseException:
                await asyncio.to_thread(bundle.delete)
                raise
            request = pb.CreateTaskRequest(
                id=task_id,
                bundle=str(bundle.path),
                rootfs=list(rootfs),
                terminal=terminal,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
            if opts is not None:
                request.options.CopyFrom(opts)
            try:
                resp: pb.CreateTaskResponse = await t.task.call("Create", request)
            except BaseException as exc:
                await self._abandon(t)
                if isinstance(exc, ContainerdError):
                    msg = f"failed to create shim task: {exc.message}"
                    raise type(exc)(msg) from exc
                raise
            t.pid = resp.pid
            self._tasks[key] = t
            t._watcher = self._spawn(self._watch_shim(t))
            return t
        finally:
            self._creating.discard(key)
            self.shims.spares.refill()

    async def start_shim(
        self,
        namespace: str,
        shim_id: str,
        bundle: Bundle,
        binary: str,
        options: bytes = b"",
        *,
        grouping: str = "",
    ) -> ShimTask:
        """Start (or reuse) the shim for ``shim_id`` in ``bundle`` and connect to it.

        For callers other than task creation (the sandbox controller): the
        returned :class:`ShimTask` is not tracked by the manager.

        Raises:
            UnknownError: the shim could not be started.
            UnavailableError: it does not answer.
        """
        launch = Launch(namespace, shim_id, binary, options, grouping=grouping)
        try:
            return await self.shims.start(bundle, launch, "")
        finally:
            self.shims.spares.refill()

    async def _abandon(self, t: ShimTask) -> None:
        """Undo a task whose Create failed: tell the shim, stop it if idle, drop the bundle."""
        with contextlib.suppress(Exception):
            await t.task.call("Delete", pb.DeleteRequest(id=t.id), timeout=SHUTDOWN_TIMEOUT)
        with contextlib.suppress(Exception):
            await t.task.call("Shutdown", pb.ShutdownRequest(id=t.id), timeout=SHUTDOWN_TIMEOUT)
        self.shims.disconnect(t)
        with contextlib.suppress(Exception):
            await self.shims.delete(t)
        await asyncio.to_thread(delete_quietly, t.bundle)

    async def delete(self, namespace: str, task_id: str) -> pb.DeleteResponse:
        """Delete a stopped task: the shim's Delete, its Shutdown, then the bundle.

        Raises:
            NotFoundError: no such task.
            ContainerdError: the shim refused (e.g. the task still runs).
        """
        t = self.get(namespace, task_id)
        try:
            resp: pb.DeleteResponse = await t.call("Delete", pb.DeleteRequest(id=task_id))
        except NotFoundError:
            if t.dead.done():
                return t.dead.result()
            raise
        # The shim announced /tasks/delete itself: forget the task before its
        # connection goes away, so the watcher does not clean it up again.
        self._tasks.pop((namespace, task_id), None)
        with contextlib.suppress(Exception):
            await t.task.call("Shutdown", pb.ShutdownRequest(id=task_id), timeout=SHUTDOWN_TIMEOUT)
        self.shims.disconnect(t)
        await asyncio.to_thread(delete_quietly, t.bundle)
        if not t.dead.done():
            t.dead.set_result(resp)
        return resp

    # -- exits and dead shims ----------------------------------------------

    async def _exit_published(self, namespace: str, task_id: str) -> None:
        """Record in the bundle that the exit of ``task_id`` reached the exchange."""
        t = self._tasks.get((namespace, task_id))
        if t is not None:
            await asyncio.to_thread(t.bundle.mark_exit_published)

    async def _watch_shim(self, t: ShimTask) -> None:
        """Clean up after ``t`` when its shim connection drops while it is still ours."""
        if t.client is None:
            return
        await t.client.wait_closed()
        if self._closing or self._tasks.get((t.namespace, t.id)) is not t:
            return
        log.info("shim disconnected", extra={"id": t.id, "namespace": t.namespace})
        await self._cleanup_dead(t)

    async def _cleanup_dead(self, t: ShimTask) -> None:
        """Upstream's dead-shim path: ``<shim> delete``, events, bundle removal."""
        log.info("cleaning up dead shim", extra={"id": t.id, "namespace": t.namespace})
        self.shims.disconnect(t)
        resp = await self.shims.delete(t)
        published = await asyncio.to_thread(lambda: t.bundle.exit_published)
        self._tasks.pop((t.namespace, t.id), None)
        if not published:
            await self.task_events.publish_exit(t.namespace, t.id, resp)
        await self.task_events.publish_delete(t.namespace, t.id, resp)
        await asyncio.to_thread(delete_quietly, t.bundle)
        if not t.dead.done():
            t.dead.set_result(resp)
