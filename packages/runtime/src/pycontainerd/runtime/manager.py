"""The runtime v2 task manager: bundles, shims and their ttrpc connections.

For each task the manager makes a bundle, runs ``<shim> ... start`` in it,
reads the address the shim prints, connects over ttrpc and calls the shim's
``containerd.task.v2.Task`` service. Shims forward their own task events
(``/tasks/create``, ``/tasks/exit``, ...) to the daemon's ttrpc Events service,
which puts them on the exchange; the manager publishes only for shims that died
(``/tasks/exit`` and ``/tasks/delete``, as upstream's dead-shim cleanup).

Exits are announced once. The manager watches ``/tasks/exit`` on the exchange
and records in the bundle (``exit-published``) that a task's exit went out.
A shim that dies, before or after a daemon restart, is cleaned up with
``<shim> delete``; its ``/tasks/exit`` is published only if none was seen
(upstream #2299 announced it twice). A task found stopped after a restart
whose exit was never seen gets its exit published once the shim had time to
deliver a queued one (upstream #10390 lost it).

This module is an edge of the runtime: it imports protobuf and the ttrpc
client (never grpc).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from google.protobuf import timestamp_pb2

from pycontainerd.api.events import task_pb2 as events_pb2
from pycontainerd.api.runtime.task.v2 import shim_pb2 as pb
from pycontainerd.api.ttrpc import Client, ServiceClient
from pycontainerd.api.types.task import task_pb2 as task_types
from pycontainerd.core import identifiers, namespaces
from pycontainerd.core.errdefs import (
    ContainerdError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnknownError,
)
from pycontainerd.runtime.bundle import ADDRESS, SHIM_BINARY_PATH, SHIM_PID, Bundle
from pycontainerd.runtime.shim import bootstrap

# One description of the shim task API serves both sides (the shim serves it).
from pycontainerd.runtime.shim.service import TASK_SPEC

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

    from google.protobuf import any_pb2

    from pycontainerd.api.types import mount_pb2
    from pycontainerd.core.events import Envelope

__all__ = [
    "DEFAULT_SHIMS",
    "TASK_SPEC",
    "EventBus",
    "ShimTask",
    "TaskManager",
    "binary_name",
]

log = logging.getLogger("pycontainerd.runtime")


DEFAULT_SHIMS: Final[Mapping[str, str]] = {"io.containerd.runc.v2": "containerd-shim-pyrunc-v2"}
"""Runtime name -> shim binary, before containerd's naming rule applies.

``io.containerd.runc.v2`` is served by pycontainerd's own shim; mapping it to
``containerd-shim-runc-v2`` in the plugin's ``shims`` table hands it to
containerd's Go shim instead.
"""

PYRUNC_SHIM: Final = "containerd-shim-pyrunc-v2"
"""Our shim's binary name: the manager reserves a running one in-process (``bootstrap.reuse``)."""

SANDBOX_MARK: Final = "sandbox-shim"
"""A bundle file naming the sandbox when the bundle is a sandbox's own (not a task's)."""
UNKNOWN_EXIT: Final = 255
"""Exit status announced for a task whose shim died without telling (upstream's)."""
START_TIMEOUT: Final = 30.0
CONNECT_TIMEOUT: Final = 10.0
STATE_TIMEOUT: Final = 2.0
SHUTDOWN_TIMEOUT: Final = 5.0
DELETE_TIMEOUT: Final = 30.0
EXIT_GRACE: Final = 20.0
"""After a restart, how long a stopped task's shim may take to deliver its queued exit.

Shims retry a failed forward after 1, 2, 3, 4 and 5 seconds; after this delay
a still missing exit is published by the manager.
"""
_EXIT_TOPIC: Final = "/tasks/exit"


class EventBus(Protocol):
    """What the manager needs from the event exchange."""

    async def publish(self, topic: str, event: object) -> None:
        """Publish ``event`` in the current namespace."""

    def subscribe(self, *filters: str) -> AsyncIterator[Envelope]:
        """Envelopes matching ``filters`` from now on."""


def binary_name(runtime: str) -> str:
    """Containerd's shim binary name for ``runtime`` ("" when it has no such name).

    ``io.containerd.runc.v2`` -> ``containerd-shim-runc-v2``: the last two
    dot-separated parts name the shim and its version.
    """
    parts = runtime.split(".")
    if len(parts) < 2 or not parts[0]:
        return ""
    return f"containerd-shim-{parts[-2]}-{parts[-1]}"


def _timestamp(when: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(when * 1e9))
    return ts


def _self_binary() -> str:
    """The path shims get as ``-publish-binary``: our ``containerd`` script if installed."""
    candidate = Path(sys.executable).parent / "containerd"
    return str(candidate) if candidate.exists() else sys.argv[0]


@dataclass(eq=False)
class ShimTask:
    """A task and the shim serving it.

    Attributes:
        namespace: the task's namespace.
        id: the task (container) id.
        bundle: its bundle.
        binary: the shim executable that started it (for ``delete``).
        runtime: the runtime name it was created with.
        client: the ttrpc connection to the shim.
        pid: the task's init pid (0 until known).
        dead: resolves with the exit announced for it when its shim died.
    """

    namespace: str
    id: str
    bundle: Bundle
    binary: str
    runtime: str
    client: Client | None
    pid: int = 0
    dead: asyncio.Future[pb.DeleteResponse] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    _log_fd: int | None = field(default=None, repr=False)
    _watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def task(self) -> ServiceClient:
        """The shim's task service, in this task's namespace.

        Raises:
            NotFoundError: there is no connection to the shim.
        """
        if self.client is None:
            msg = f"task {self.id} not found"
            raise NotFoundError(msg)
        return ServiceClient(self.client, TASK_SPEC, namespace=self.namespace)

    async def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Call ``method`` of the shim's task service.

        Raises:
            NotFoundError: the shim is gone (``task <id> not found``) or said so.
            ContainerdError: the kind the shim answered with.
        """
        if self.dead.done():
            msg = f"task {self.id} not found"
            raise NotFoundError(msg)
        call = asyncio.ensure_future(self.task.call(method, request, timeout=timeout))
        done, _ = await asyncio.wait({call, self.dead}, return_when=asyncio.FIRST_COMPLETED)
        if call in done:
            return call.result()
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
        msg = f"task {self.id} not found"
        raise NotFoundError(msg)

    async def wait(self, exec_id: str = "") -> pb.WaitResponse:
        """Wait for the task (or ``exec_id``) to exit; a dead shim answers with its exit."""
        call = asyncio.ensure_future(
            self.task.call("Wait", pb.WaitRequest(id=self.id, exec_id=exec_id))
        )
        done, _ = await asyncio.wait({call, self.dead}, return_when=asyncio.FIRST_COMPLETED)
        if call in done and (call.exception() is None or not self.dead.done()):
            result: pb.WaitResponse = call.result()
            return result
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
        if not self.dead.done():
            await asyncio.shield(self.dead)
        exit_ = self.dead.result()
        return pb.WaitResponse(exit_status=exit_.exit_status, exited_at=exit_.exited_at)

    async def state(self, exec_id: str = "") -> pb.StateResponse:
        """The shim's view of the task or of ``exec_id``."""
        result: pb.StateResponse = await self.call(
            "State", pb.StateRequest(id=self.id, exec_id=exec_id), timeout=STATE_TIMEOUT
        )
        return result


@dataclass
class _Launch:
    """What a shim start needs besides the bundle."""

    namespace: str
    task_id: str
    binary: str
    options: bytes
    grouping: str = ""
    """``PYCONTAINERD_SHIM_GROUPING`` for this start ("" = the daemon's environment)."""
    join: str = ""
    """Socket path of a running shim (a sandbox's) that must serve the task."""


class TaskManager:
    """Tasks of every namespace, each served by a shim (``io.containerd.runtime.v2.task``).

    Args:
        state_dir: ``<state>/io.containerd.runtime.v2.task``.
        root_dir: ``<root>/io.containerd.runtime.v2.task``.
        grpc_address: the daemon's gRPC socket (shims get it as ``-address``).
        ttrpc_address: the daemon's ttrpc socket (``TTRPC_ADDRESS`` of shims).
        events: the event exchange.
        shims: runtime name -> shim binary (name or absolute path).
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
        self.grpc_address = grpc_address
        self.ttrpc_address = ttrpc_address
        self.events = events
        self.shims = dict(DEFAULT_SHIMS if shims is None else shims)
        self._resolve = resolve
        self._env = env or (lambda: dict(os.environ))
        self._container_runtime = container_runtime
        self.debug = debug
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
        self._exit_watch = asyncio.create_task(self._watch_exits(ready))
        await ready.wait()
        await self._restore()

    async def aclose(self) -> None:
        """Disconnect from every shim; the shims and their tasks keep running."""
        self._closing = True
        for task in list(self._background):
            task.cancel()
        if self._exit_watch is not None:
            self._exit_watch.cancel()
        for t in list(self._tasks.values()):
            self._disconnect(t)
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
        """A shim's environment: the daemon's (``opt`` bin first) plus upstream's variables."""
        env = self._env()
        env.update(
            {
                "GOMAXPROCS": "2",
                "TTRPC_ADDRESS": self.ttrpc_address,
                "GRPC_ADDRESS": self.grpc_address,
                "NAMESPACE": namespace,
            }
        )
        return env

    def resolve_binary(self, runtime: str, runtime_path: str = "") -> str:
        """The shim executable for ``runtime`` (``runtime_path`` wins when given).

        Raises:
            UnknownError: nothing of that name is installed (upstream's text:
                ``failed to resolve runtime path: runtime "<r>" binary not
                installed "<name>": file does not exist``).
            InvalidArgumentError: the runtime name yields no binary name.
        """
        if runtime_path:
            if not os.path.isabs(runtime_path):
                msg = f"runtime path {runtime_path!r} must be absolute"
                raise InvalidArgumentError(msg)
            return runtime_path
        if os.path.isabs(runtime):
            return runtime
        name = self.shims.get(runtime) or (self._resolve(runtime) if self._resolve else None)
        name = name or binary_name(runtime)
        if not name:
            msg = f"invalid runtime name {runtime}, correct runtime name should be either format like `io.containerd.runc.v1` or a full path to the binary"  # noqa: E501 - upstream's text
            raise InvalidArgumentError(msg)
        if os.path.isabs(name):
            if os.access(name, os.X_OK):
                return name
        else:
            path = self._env().get("PATH", os.defpath)
            found = shutil.which(name, path=path) or shutil.which(
                name, path=str(Path(sys.executable).parent)
            )
            if found:
                return found
        msg = (
            f'failed to resolve runtime path: runtime "{runtime}" binary not installed '
            f'"{name}": file does not exist'
        )
        raise UnknownError(msg)

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
        _check_spec(spec)
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
                t = await self._start_shim(
                    bundle, _Launch(namespace, task_id, binary, options, join=join), runtime
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
        launch = _Launch(namespace, shim_id, binary, options, grouping=grouping)
        return await self._start_shim(bundle, launch, "")

    async def _start_shim(self, bundle: Bundle, launch: _Launch, runtime: str) -> ShimTask:
        """Run ``<shim> start`` in the bundle and connect to the address it prints."""
        log_fd = _open_log(bundle)
        try:
            address = await self._run_start(bundle, launch)
            bundle.write(ADDRESS, address, 0o644)
            bundle.write(SHIM_BINARY_PATH, launch.binary)
            try:
                client = await Client.connect(address, timeout=CONNECT_TIMEOUT)
            except ContainerdError as exc:
                msg = f"failed to start shim: {exc.message}"
                raise UnavailableError(msg) from exc
        except BaseException:
            _close_log(log_fd)
            raise
        t = ShimTask(
            namespace=launch.namespace,
            id=launch.task_id,
            bundle=bundle,
            binary=launch.binary,
            runtime=runtime,
            client=client,
        )
        t._log_fd = log_fd
        self._follow_log(t)
        if not bundle.read(SHIM_PID):
            # containerd's Go shim does not write it; ours does.
            with contextlib.suppress(ContainerdError):
                conn: pb.ConnectResponse = await t.task.call(
                    "Connect", pb.ConnectRequest(id=t.id), timeout=CONNECT_TIMEOUT
                )
                bundle.write(SHIM_PID, str(conn.shim_pid), 0o644)
        return t

    def _argv(self, binary: str, namespace: str, task_id: str, *extra: str) -> list[str]:
        argv = [
            binary,
            "-namespace",
            namespace,
            "-address",
            self.grpc_address,
            "-publish-binary",
            _self_binary(),
            "-id",
            task_id,
        ]
        argv.extend(extra[:-1])
        if self.debug:
            argv.append("-debug")
        argv.append(extra[-1])
        return argv

    async def _run_start(self, bundle: Bundle, launch: _Launch) -> str:
        env = self.shim_env(launch.namespace)
        if launch.grouping:
            env[bootstrap.GROUPING_ENV] = launch.grouping
        if launch.join:
            address = await asyncio.to_thread(
                bootstrap.join, str(bundle.path), launch.join, launch.task_id
            )
            if address is not None:
                return address
        if os.path.basename(launch.binary) == PYRUNC_SHIM:
            # Our own shim: reserving a running one needs no ``start`` process
            # (a Python start-up, ~40 ms); only a new shim does.
            address = await asyncio.to_thread(
                bootstrap.reuse,
                str(bundle.path),
                launch.namespace,
                launch.task_id,
                self.grpc_address,
                env.get(bootstrap.GROUPING_ENV) or "namespace",
                options=launch.options,
            )
            if address is not None:
                return address
        argv = self._argv(launch.binary, launch.namespace, launch.task_id, "start")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=bundle.path,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                process_group=0,
            )
        except OSError as exc:
            msg = f"failed to start shim: start failed: {exc}"
            raise UnknownError(msg) from exc
        try:
            async with asyncio.timeout(START_TIMEOUT):
                out, _ = await proc.communicate(launch.options)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            msg = "failed to start shim: start failed: timed out"
            raise UnknownError(msg) from None
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            msg = f"failed to start shim: start failed: {text}: exit status {proc.returncode}"
            raise UnknownError(msg)
        return parse_address(text)

    async def _abandon(self, t: ShimTask) -> None:
        """Undo a task whose Create failed: tell the shim, stop it if idle, drop the bundle."""
        with contextlib.suppress(Exception):
            await t.task.call("Delete", pb.DeleteRequest(id=t.id), timeout=SHUTDOWN_TIMEOUT)
        with contextlib.suppress(Exception):
            await t.task.call("Shutdown", pb.ShutdownRequest(id=t.id), timeout=SHUTDOWN_TIMEOUT)
        self._disconnect(t)
        with contextlib.suppress(Exception):
            await self._shim_delete(t)
        await asyncio.to_thread(_delete_bundle, t.bundle)

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
        self._disconnect(t)
        await asyncio.to_thread(_delete_bundle, t.bundle)
        if not t.dead.done():
            t.dead.set_result(resp)
        return resp

    def _disconnect(self, t: ShimTask) -> None:
        if t.client is not None:
            t.client.close()
        _close_log(t._log_fd)
        t._log_fd = None

    # -- the shim's log -----------------------------------------------------

    def _follow_log(self, t: ShimTask) -> None:
        """Copy what the shim writes to the bundle's ``log`` FIFO into our log."""
        fd = t._log_fd
        if fd is None:
            return
        loop = asyncio.get_running_loop()
        pending = bytearray()

        def readable() -> None:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                with contextlib.suppress(Exception):
                    loop.remove_reader(fd)
                return
            pending.extend(chunk)
            *lines, rest = bytes(pending).split(b"\n")
            pending[:] = rest
            for line in lines:
                if line.strip():
                    log.debug("shim: %s", line.decode(errors="replace"), extra={"id": t.id})

        loop.add_reader(fd, readable)

    # -- exits and dead shims ----------------------------------------------

    async def _watch_exits(self, ready: asyncio.Event) -> None:
        """Record each task's init exit seen on the exchange (in its bundle)."""
        sub = self.events.subscribe(f'topic=="{_EXIT_TOPIC}"')
        ready.set()
        try:
            async for env in sub:
                ev = _task_exit(env)
                if ev is None:
                    continue
                if ev.id and ev.id != ev.container_id:
                    continue  # an exec process
                t = self._tasks.get((env.namespace, ev.container_id))
                if t is not None:
                    await asyncio.to_thread(t.bundle.mark_exit_published)
        finally:
            close = getattr(sub, "close", None)
            if callable(close):
                close()

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
        self._disconnect(t)
        resp = await self._shim_delete(t)
        published = await asyncio.to_thread(lambda: t.bundle.exit_published)
        self._tasks.pop((t.namespace, t.id), None)
        with namespaces.with_namespace(t.namespace):
            if not published:
                await self.events.publish(
                    _EXIT_TOPIC,
                    events_pb2.TaskExit(
                        container_id=t.id,
                        id=t.id,
                        pid=resp.pid,
                        exit_status=resp.exit_status,
                        exited_at=resp.exited_at,
                    ),
                )
            await self.events.publish(
                "/tasks/delete",
                events_pb2.TaskDelete(
                    container_id=t.id,
                    pid=resp.pid,
                    exit_status=resp.exit_status,
                    exited_at=resp.exited_at,
                ),
            )
        await asyncio.to_thread(_delete_bundle, t.bundle)
        if not t.dead.done():
            t.dead.set_result(resp)

    async def _shim_delete(self, t: ShimTask) -> pb.DeleteResponse:
        """Run ``<shim> ... -bundle B delete``; exit status 255 when it says nothing."""
        fallback = pb.DeleteResponse(
            pid=t.pid, exit_status=UNKNOWN_EXIT, exited_at=_timestamp(time.time())
        )
        argv = self._argv(t.binary, t.namespace, t.id, "-bundle", str(t.bundle.path), "delete")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=t.bundle.path if t.bundle.path.is_dir() else "/",
                env=self.shim_env(t.namespace),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            async with asyncio.timeout(DELETE_TIMEOUT):
                out, err = await proc.communicate()
        except (OSError, TimeoutError) as exc:
            log.warning("failed to clean up after shim disconnected: %s", exc)
            return fallback
        if proc.returncode != 0:
            log.warning(
                "failed to clean up after shim disconnected: %s",
                err.decode(errors="replace").strip(),
                extra={"id": t.id},
            )
            return fallback
        resp = pb.DeleteResponse()
        try:
            resp.ParseFromString(out)
        except Exception:
            return fallback
        if not resp.pid:
            resp.pid = t.pid
        return resp

    # -- restore after a restart -------------------------------------------

    async def _restore(self) -> None:
        """Reconnect to the shims of the bundles an earlier run left behind."""
        for ns_dir in sorted(_subdirs(self.state_dir)):
            ns = ns_dir.name
            log.info("loading tasks in namespace", extra={"namespace": ns})
            for path in sorted(_subdirs(ns_dir)):
                try:
                    await self._restore_one(ns, path)
                except Exception:
                    log.exception("failed to load task %s", path.name)
        for ns_dir in _subdirs(self.root_dir):
            for work in _subdirs(ns_dir):
                if not (self.state_dir / ns_dir.name / work.name).exists():
                    await asyncio.to_thread(shutil.rmtree, work, True)

    async def _restore_one(self, ns: str, path: Path) -> None:
        if not identifiers.is_valid(ns) or not identifiers.is_valid(path.name):
            return
        if await asyncio.to_thread(_remove_if_empty, path):
            return
        bundle = Bundle(self.state_dir, self.root_dir, ns, path.name)
        if bundle.read(SANDBOX_MARK):
            return  # a sandbox's shim: the sandbox controller's, not a task
        binary = bundle.read(SHIM_BINARY_PATH)
        if not binary:
            runtime = ""
            if self._container_runtime is not None:
                with namespaces.with_namespace(ns):
                    runtime = await self._container_runtime(ns, path.name)
            if not runtime:
                log.info("container of bundle %s is gone: removing it", path)
                await asyncio.to_thread(_delete_bundle, bundle)
                return
            binary = self.resolve_binary(runtime)
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
        self._tasks[(ns, t.id)] = t
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
                t._log_fd = _open_log(bundle)
                self._follow_log(t)
                t._watcher = self._spawn(self._watch_shim(t))
                if state.status == task_types.STOPPED and not bundle.exit_published:
                    self._spawn(self._publish_missing_exit(t, state))
                return
        await self._cleanup_dead(t)

    async def _publish_missing_exit(self, t: ShimTask, state: pb.StateResponse) -> None:
        """Publish a stopped task's exit if its shim does not deliver it within the grace."""
        await asyncio.sleep(self.exit_grace)
        if self._tasks.get((t.namespace, t.id)) is not t:
            return
        if await asyncio.to_thread(lambda: t.bundle.exit_published):
            return
        log.info("publishing exit the shim did not deliver", extra={"id": t.id})
        with namespaces.with_namespace(t.namespace):
            await self.events.publish(
                _EXIT_TOPIC,
                events_pb2.TaskExit(
                    container_id=t.id,
                    id=t.id,
                    pid=state.pid,
                    exit_status=state.exit_status,
                    exited_at=state.exited_at,
                ),
            )
        await asyncio.to_thread(t.bundle.mark_exit_published)


def parse_address(text: str) -> str:
    """The ttrpc address in a shim's ``start`` output (plain, or upstream's JSON bootstrap).

    Raises:
        UnknownError: the output names no address or another protocol.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            boot = json.loads(text)
        except ValueError as exc:
            msg = f"failed to start shim: invalid bootstrap {text!r}"
            raise UnknownError(msg) from exc
        if not isinstance(boot, dict):
            msg = f"failed to start shim: invalid bootstrap {text!r}"
            raise UnknownError(msg)
        protocol = boot.get("protocol", "ttrpc")
        if protocol != "ttrpc":
            msg = f"failed to start shim: unsupported shim protocol {protocol!r}"
            raise UnknownError(msg)
        text = str(boot.get("address", ""))
    if not text:
        msg = "failed to start shim: it printed no address"
        raise UnknownError(msg)
    return text if "://" in text else f"unix://{text}"


def _task_exit(env: Envelope) -> events_pb2.TaskExit | None:
    ev = events_pb2.TaskExit()
    try:
        ev.ParseFromString(env.event.value)
    except Exception:
        log.debug("ignoring a malformed %s event", _EXIT_TOPIC)
        return None
    return ev


def _check_spec(spec: bytes) -> None:
    try:
        doc = json.loads(spec)
    except ValueError as exc:
        msg = f"invalid OCI spec: {exc}"
        raise InvalidArgumentError(msg) from exc
    if not isinstance(doc, dict):
        msg = "invalid OCI spec: not a JSON object"
        raise InvalidArgumentError(msg)


def _open_log(bundle: Bundle) -> int | None:
    """Open the bundle's ``log`` FIFO for reading (read-write: it never reports EOF)."""
    try:
        return os.open(bundle.log_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None


def _close_log(fd: int | None) -> None:
    if fd is None:
        return
    with contextlib.suppress(Exception):
        asyncio.get_running_loop().remove_reader(fd)
    with contextlib.suppress(OSError):
        os.close(fd)


def _delete_bundle(bundle: Bundle) -> None:
    try:
        bundle.delete()
    except OSError as exc:
        log.warning("failed to delete bundle: %s", exc, extra={"id": bundle.id})


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
