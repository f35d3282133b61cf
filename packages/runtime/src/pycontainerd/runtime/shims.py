"""Shim processes: which binary serves a runtime, starting one, its log, ``<shim> delete``.

The shim side of the runtime v2 task manager. :class:`Shims` resolves a
runtime name to a shim executable (the plugin's ``shims`` table, the
``pycontainerd_runtime_shim_binary`` hook, then containerd's naming rule on
``PATH``), runs ``<shim> ... start`` in a bundle (or reserves a running
pycontainerd shim), connects to the ttrpc address it prints and copies the
shim's log FIFO into the daemon's log. :class:`ShimTask` is a task and the
connection to the shim serving it.

This module imports protobuf and the ttrpc client (never grpc).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import timestamp_pb2

from pycontainerd.api.runtime.task.v2 import shim_pb2 as pb
from pycontainerd.api.ttrpc import Client, ServiceClient
from pycontainerd.core.errdefs import (
    ContainerdError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnknownError,
)
from pycontainerd.core.jsonload import load_json
from pycontainerd.runtime.bundle import ADDRESS, SHIM_BINARY_PATH, SHIM_PID, close_log, open_log
from pycontainerd.runtime.shim import bootstrap

# One description of the shim task API serves both sides (the shim serves it).
from pycontainerd.runtime.shim.service import TASK_SPEC
from pycontainerd.runtime.spares import Spares

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from pycontainerd.runtime.bundle import Bundle

__all__ = [
    "DEFAULT_SHIMS",
    "TASK_SPEC",
    "UNKNOWN_EXIT",
    "Launch",
    "ShimTask",
    "Shims",
    "binary_name",
    "parse_address",
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

UNKNOWN_EXIT: Final = 255
"""Exit status announced for a task whose shim died without telling (upstream's)."""
START_TIMEOUT: Final = 30.0
CONNECT_TIMEOUT: Final = 10.0
STATE_TIMEOUT: Final = 2.0
SHUTDOWN_TIMEOUT: Final = 5.0
DELETE_TIMEOUT: Final = 30.0


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
class Launch:
    """What a shim start needs besides the bundle."""

    namespace: str
    task_id: str
    binary: str
    options: bytes
    grouping: str = ""
    """``PYCONTAINERD_SHIM_GROUPING`` for this start ("" = the daemon's environment)."""
    join: str = ""
    """Socket path of a running shim (a sandbox's) that must serve the task."""


class Shims:
    """Finds, starts and deletes shims for the task manager and the sandbox controller.

    Args:
        grpc_address: the daemon's gRPC socket (shims get it as ``-address``).
        ttrpc_address: the daemon's ttrpc socket (``TTRPC_ADDRESS`` of shims).
        binaries: runtime name -> shim binary (name or absolute path).
        resolve: a further resolver asked when ``binaries`` has no entry.
        env: builds a shim's base environment (``opt`` puts its ``bin`` first).
        debug: start shims with ``-debug``.
    """

    def __init__(
        self,
        *,
        grpc_address: str,
        ttrpc_address: str,
        binaries: Mapping[str, str] | None = None,
        resolve: Callable[[str], str | None] | None = None,
        env: Callable[[], dict[str, str]] | None = None,
        debug: bool = False,
    ) -> None:
        self.grpc_address = grpc_address
        self.ttrpc_address = ttrpc_address
        self.binaries = dict(DEFAULT_SHIMS if binaries is None else binaries)
        self._resolve = resolve
        self._env = env or (lambda: dict(os.environ))
        self.debug = debug
        self.spares = Spares(grpc_address, lambda: self.shim_env(""))
        """The spare pyrunc shim a new shim of ours is made of (:mod:`.spares`)."""

    async def aclose(self) -> None:
        """Stop the spare shim (shims serving tasks keep running)."""
        await self.spares.aclose()

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
        name = self.binaries.get(runtime) or (self._resolve(runtime) if self._resolve else None)
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

    async def start(self, bundle: Bundle, launch: Launch, runtime: str) -> ShimTask:
        """Run ``<shim> start`` in the bundle (or reuse a running shim) and connect to it."""
        log_fd = open_log(bundle)
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
            close_log(log_fd)
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
        self.follow_log(t)
        if not bundle.read(SHIM_PID):
            # containerd's Go shim does not write it; ours does.
            with contextlib.suppress(ContainerdError):
                conn: pb.ConnectResponse = await t.task.call(
                    "Connect", pb.ConnectRequest(id=t.id), timeout=CONNECT_TIMEOUT
                )
                bundle.write(SHIM_PID, str(conn.shim_pid), 0o644)
        return t

    def argv(self, binary: str, namespace: str, task_id: str, *extra: str) -> list[str]:
        """``<binary> -namespace N -address A -publish-binary P -id I [extra] [-debug] action``."""
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

    async def _run_start(self, bundle: Bundle, launch: Launch) -> str:
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
            # (a Python start-up, ~40 ms); when the shim runs on this interpreter,
            # starting a new one does not either, and a spare shim started
            # earlier saves the new shim's own start-up and imports.
            if _runs_on_this_python(launch.binary):
                return await self._start_here(bundle, launch, env)
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
        argv = self.argv(launch.binary, launch.namespace, launch.task_id, "start")
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

    async def _start_here(self, bundle: Bundle, launch: Launch, env: dict[str, str]) -> str:
        spare = self.spares.take()
        needed = False

        def offer(argv: list[str], env: dict[str, str], listener: int, log: str) -> int | None:
            nonlocal needed  # in the thread, only when a new shim is needed
            needed = True
            return None if spare is None else spare.take_over(argv, env, listener, log)

        try:
            return await asyncio.to_thread(
                bootstrap.start_here,
                str(bundle.path),
                launch.namespace,
                launch.task_id,
                self.grpc_address,
                env,
                options=launch.options,
                debug=self.debug,
                spare=offer,
            )
        except (OSError, ValueError) as exc:
            msg = f"failed to start shim: start failed: {PYRUNC_SHIM}: {exc}"
            raise UnknownError(msg) from exc
        finally:
            self.spares.give_back(spare, wanted=needed)

    async def delete(self, t: ShimTask) -> pb.DeleteResponse:
        """Run ``<shim> ... -bundle B delete``; exit status 255 when it says nothing."""
        fallback = pb.DeleteResponse(
            pid=t.pid, exit_status=UNKNOWN_EXIT, exited_at=_timestamp(time.time())
        )
        argv = self.argv(t.binary, t.namespace, t.id, "-bundle", str(t.bundle.path), "delete")
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

    def disconnect(self, t: ShimTask) -> None:
        """Close the connection to ``t``'s shim and stop following its log."""
        if t.client is not None:
            t.client.close()
        close_log(t._log_fd)
        t._log_fd = None

    def follow_log(self, t: ShimTask) -> None:
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


@functools.cache
def _runs_on_this_python(binary: str) -> bool:
    """Whether the script ``binary`` runs on this process's interpreter (its ``#!`` line)."""
    try:
        with open(binary, "rb") as f:
            first = f.readline(4096)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == b"#!" + os.fsencode(sys.executable)


def parse_address(text: str) -> str:
    """The ttrpc address in a shim's ``start`` output (plain, or upstream's JSON bootstrap).

    Raises:
        UnknownError: the output names no address or another protocol.
    """
    text = text.strip()
    if text.startswith("{"):
        try:
            boot = load_json(text, dict)
        except ValueError as exc:
            msg = f"failed to start shim: invalid bootstrap {text!r}"
            raise UnknownError(msg) from exc
        protocol = boot.get("protocol", "ttrpc")
        if protocol != "ttrpc":
            msg = f"failed to start shim: unsupported shim protocol {protocol!r}"
            raise UnknownError(msg)
        text = str(boot.get("address", ""))
    if not text:
        msg = "failed to start shim: it printed no address"
        raise UnknownError(msg)
    return text if "://" in text else f"unix://{text}"
