"""Exec, Attach and PortForward: the CRI's side of the streaming server.

The CRI ``Exec``/``Attach``/``PortForward`` calls check their request
(:func:`exec_url`, :func:`attach_url`, :func:`portforward_url`) and register
it with the :class:`~pycontainerd.cri.streaming.server.StreamingServer`, whose
one-time URL is the answer. When a client opens that URL the server calls
:class:`CriStreamingHandler`, which drives the container's task through its
shim:

* exec: an exec process (``Exec``, ``Start``, ``ResizePty``, ``Wait``) with
  FIFOs bridged to the session; its exit code is the session's status. A
  client that goes away kills the process (SIGKILL) and deletes it.
* attach: the container's output as its log copiers read it, and its stdin
  FIFO (:mod:`pycontainerd.cri.attach`); resize reaches the init process.
* port-forward: a TCP connection to ``127.0.0.1:<port>`` made from a socket
  created inside the pod's network namespace (a short-lived thread enters the
  pinned namespace with setns(2) to create it), one per forwarded stream.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import logging
import os
import secrets
import signal
import socket
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pycontainerd.core.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnknownError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.cri.containers import PROCESS_TYPE_URL, RUNNING
from pycontainerd.cri.sandbox import K8S_NAMESPACE, READY
from pycontainerd.cri.streaming.fifos import (
    ProcessFifos,
    copy_from_fd,
    copy_to_fd,
    open_reader,
    open_writer,
)
from pycontainerd.cri.streaming.session import (
    CommandFailedError,
    CommandStreams,
    PortStream,
    StreamRequest,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

    from pycontainerd.cri.config import CriConfig
    from pycontainerd.cri.containers import ContainerManager, CriContainer
    from pycontainerd.cri.sandbox import SandboxManager
    from pycontainerd.cri.streaming.server import StreamingServer
    from pycontainerd.runtime.shims import ShimTask

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
RELAY_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ExecTarget:
    """What an exec URL runs: ``cmd`` in container ``container_id``."""

    container_id: str
    cmd: tuple[str, ...]


@dataclass(frozen=True)
class AttachTarget:
    """What an attach URL connects to: container ``container_id``'s stdio."""

    container_id: str


@dataclass(frozen=True)
class PodTarget:
    """What a port-forward URL reaches: the network namespace of pod ``sandbox_id``."""

    sandbox_id: str


# -- the CRI calls --------------------------------------------------------------------


_Found = TypeVar("_Found")


def _in_store(get: Callable[[str], _Found], what: str, key: str) -> _Found:
    """``get(key)``; its NotFound says what was looked up, in upstream's words."""
    try:
        return get(key)
    except NotFoundError as e:
        msg = f"failed to find {what} {go_quote(key)} in store: {e}"
        raise NotFoundError(msg) from e


def _running(containers: ContainerManager, cid: str) -> CriContainer:
    c = _in_store(containers.get, "container", cid)
    if c.state != RUNNING:
        msg = f"container is in {c.state} state"
        raise UnknownError(msg)
    return c


def _check_stdio(*, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> None:
    # The kubelet streaming library's checks, with its texts.
    if not (stdin or stdout or stderr):
        msg = "one of stdin, stdout, or stderr must be set"
        raise InvalidArgumentError(msg)
    if tty and stderr:
        msg = "tty and stderr cannot both be true"
        raise InvalidArgumentError(msg)


def exec_url(
    server: StreamingServer,
    containers: ContainerManager,
    *,
    container_id: str,
    cmd: list[str],
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> str:
    """The URL of an exec session (CRI ``Exec``).

    Raises:
        NotFoundError: no such container.
        UnknownError: it is not running (containerd's code and text).
        InvalidArgumentError: no command, no stream, or tty with stderr.
    """
    c = _running(containers, container_id)
    if not cmd:
        msg = "missing required cmd"
        raise InvalidArgumentError(msg)
    _check_stdio(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    return server.register(
        StreamRequest(
            "exec",
            ExecTarget(c.id, tuple(cmd)),
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            tty=tty,
        )
    )


def attach_url(
    server: StreamingServer,
    containers: ContainerManager,
    *,
    container_id: str,
    tty: bool,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> str:
    """The URL of an attach session (CRI ``Attach``); raises as :func:`exec_url`."""
    c = _running(containers, container_id)
    _check_stdio(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    return server.register(
        StreamRequest(
            "attach", AttachTarget(c.id), stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
        )
    )


def portforward_url(
    server: StreamingServer, sandboxes: SandboxManager, *, sandbox_id: str, ports: list[int]
) -> str:
    """The URL of a port-forward session (CRI ``PortForward``).

    Raises:
        InvalidArgumentError: no sandbox id, or a port outside 1-65535.
        NotFoundError: no such sandbox.
        FailedPreconditionError: the sandbox is not ready.
    """
    if not sandbox_id:
        msg = "missing required pod_sandbox_id"
        raise InvalidArgumentError(msg)
    for port in ports:
        if not 0 < port < 65536:
            msg = f"invalid port {port}"
            raise InvalidArgumentError(msg)
    sb = _in_store(sandboxes.get, "sandbox", sandbox_id)
    if sb.state != READY:
        msg = f"sandbox {go_quote(sb.id)} is not running"
        raise FailedPreconditionError(msg)
    return server.register(StreamRequest("portforward", PodTarget(sb.id), ports=tuple(ports)))


# -- the server -------------------------------------------------------------------------


def make_server(
    config: CriConfig, containers: ContainerManager, sandboxes: SandboxManager, io_dir: Path
) -> StreamingServer:
    """The streaming server as the ``stream_server_*`` settings describe it (not started).

    An empty ``stream_server_address`` is this host's address (its name's),
    as containerd picks the node's address.
    """
    from pycontainerd.cri.streaming import tls
    from pycontainerd.cri.streaming.server import StreamingServer

    ssl_context = None
    if config.enable_tls_streaming:
        if config.tls_cert_file and config.tls_key_file:
            ssl_context = tls.context_from_files(config.tls_cert_file, config.tls_key_file)
        else:
            ssl_context, _ = tls.self_signed_context(config.stream_server_address)
    return StreamingServer(
        CriStreamingHandler(containers, sandboxes, io_dir),
        config.stream_server_address or _node_address(),
        int(config.stream_server_port),
        ssl_context=ssl_context,
        idle_timeout=config.stream_idle_timeout or None,
    )


def _node_address() -> str:
    """The address an empty ``stream_server_address`` stands for: this host's own."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


# -- the sessions -----------------------------------------------------------------------


_Target = TypeVar("_Target", ExecTarget, AttachTarget, PodTarget)


def _payload(request: StreamRequest, kind: type[_Target], wrong: str) -> _Target:
    """The request's target, which must be a ``kind`` (else CommandFailedError ``wrong``)."""
    target = request.payload
    if not isinstance(target, kind):
        raise CommandFailedError(wrong)
    return target


class CriStreamingHandler:
    """The :class:`~pycontainerd.cri.streaming.session.StreamingHandler` of the CRI plugin."""

    def __init__(
        self, containers: ContainerManager, sandboxes: SandboxManager, io_dir: Path
    ) -> None:
        self.containers = containers
        self.sandboxes = sandboxes
        self.io_dir = io_dir
        self._cleanups: set[asyncio.Task[None]] = set()

    def _task(self, cid: str) -> tuple[CriContainer, ShimTask]:
        try:
            c = self.containers.get(cid)
        except NotFoundError as e:
            raise CommandFailedError(str(e)) from e
        if c.state != RUNNING:
            msg = f"container {go_quote(c.id)} is in {c.state} state"
            raise CommandFailedError(msg)
        try:
            return c, self.sandboxes.tasks.get(K8S_NAMESPACE, c.id)
        except NotFoundError as e:
            raise CommandFailedError(str(e)) from e

    async def _resize(self, t: ShimTask, cid: str, exec_id: str, streams: CommandStreams) -> None:
        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        async for size in streams.resizes():
            try:
                await t.call(
                    "ResizePty",
                    shim.ResizePtyRequest(
                        id=cid, exec_id=exec_id, width=size.width, height=size.height
                    ),
                )
            except Exception as e:
                log.info("resize of %s/%s failed: %s", cid, exec_id or "init", e)

    async def exec(self, request: StreamRequest, streams: CommandStreams) -> int:
        from google.protobuf import any_pb2

        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        target = _payload(request, ExecTarget, "not an exec request")
        c, t = self._task(target.container_id)
        exec_id = secrets.token_hex(8)
        process = dict(json.loads(c.spec)["process"])
        process["args"] = list(target.cmd)
        process["terminal"] = request.tty
        base = self.io_dir / c.id
        base.mkdir(parents=True, exist_ok=True)
        fifos = ProcessFifos.create(
            base,
            f"exec-{exec_id}",
            stdin=streams.stdin is not None,
            stdout=streams.stdout is not None,
            stderr=streams.stderr is not None and not request.tty,
        )
        # Our sides of the FIFOs are open before the shim opens its own; the
        # copies start once the process started (the shim has them open then).
        fds: dict[str, int] = {}
        copiers: list[asyncio.Task[None]] = []
        stdin_copier: asyncio.Task[None] | None = None
        resizer: asyncio.Task[None] | None = None
        created = exited = False
        try:
            _open_sides(fifos, fds)
            await t.call(
                "Exec",
                shim.ExecProcessRequest(
                    id=c.id,
                    exec_id=exec_id,
                    terminal=request.tty,
                    stdin=fifos.stdin,
                    stdout=fifos.stdout,
                    stderr=fifos.stderr,
                    spec=any_pb2.Any(type_url=PROCESS_TYPE_URL, value=json.dumps(process).encode()),
                ),
            )
            created = True
            await t.call("Start", shim.StartRequest(id=c.id, exec_id=exec_id))
            for name, out in (("stdout", streams.stdout), ("stderr", streams.stderr)):
                if name in fds and out is not None:
                    copiers.append(asyncio.ensure_future(copy_from_fd(fds.pop(name), out)))
            if "stdin" in fds and streams.stdin is not None:
                stdin_copier = asyncio.ensure_future(copy_to_fd(streams.stdin, fds.pop("stdin")))
            if request.tty:
                resizer = asyncio.ensure_future(self._resize(t, c.id, exec_id, streams))
            resp = await t.wait(exec_id)
            exited = True
            # The shim closes the output FIFOs once the process's output is drained.
            if copiers:
                await asyncio.gather(*copiers, return_exceptions=True)
            return int(resp.exit_status)
        finally:
            await self._end_exec(t, c.id, exec_id, created=created, exited=exited)
            for task in (*copiers, stdin_copier, resizer):
                if task is not None and not task.done():
                    task.cancel()
            waiting = [x for x in (*copiers, stdin_copier, resizer) if x is not None]
            if waiting:
                await asyncio.gather(*waiting, return_exceptions=True)
            for fd in fds.values():
                os.close(fd)
            fifos.remove()

    async def _end_exec(
        self, t: ShimTask, cid: str, exec_id: str, *, created: bool, exited: bool
    ) -> None:
        """Kill (unless it exited) and delete an exec process; never raises."""
        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        if not created:
            return

        async def end() -> None:
            if not exited:
                with contextlib.suppress(Exception):
                    await t.call(
                        "Kill",
                        shim.KillRequest(id=cid, exec_id=exec_id, signal=int(signal.SIGKILL)),
                    )
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(t.wait(exec_id), 10)
            with contextlib.suppress(Exception):
                await t.call("Delete", shim.DeleteRequest(id=cid, exec_id=exec_id))

        task = asyncio.ensure_future(end())
        if exited:
            # Nothing to wait for: the session reports the exit status at once
            # and the process is deleted in the background.
            self._cleanups.add(task)
            task.add_done_callback(self._cleanups.discard)
            return
        # Shielded: this runs while the session is being cancelled.
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await task
            raise

    async def attach(self, request: StreamRequest, streams: CommandStreams) -> int:
        target = _payload(request, AttachTarget, "not an attach request")
        c, t = self._task(target.container_id)
        stdio = self.containers.stdio.get(c.id)
        if stdio is None:
            msg = f"container {go_quote(c.id)} has no attachable stdio"
            raise CommandFailedError(msg)
        sub = stdio.subscribe()
        work: list[Coroutine[object, object, None]] = []

        async def output() -> None:
            while (item := await sub.get()) is not None:
                stream, data = item
                out = streams.stderr if stream == "stderr" else streams.stdout
                if out is not None:
                    await out.write(data)

        async def stdin_pump() -> None:
            assert streams.stdin is not None  # noqa: S101 - only started with stdin
            try:
                while data := await streams.stdin.read():
                    await stdio.write_stdin(data)
            except BrokenPipeError:
                pass  # the container's stdin is closed: output goes on
            else:
                # As containerd: the end of an attached stdin closes a stdin_once
                # container's stdin unless it has a tty; the session goes on until
                # the container's output ends.
                if stdio.stdin_once and not stdio.tty:
                    stdio.close_stdin()
            await asyncio.Event().wait()

        work.append(output())
        if streams.stdin is not None and stdio.has_stdin:
            work.append(stdin_pump())
        aux = [asyncio.ensure_future(self._resize(t, c.id, "", streams))] if request.tty else []
        tasks = [asyncio.ensure_future(w) for w in work]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task.done():
                    task.result()  # a failure reaches the error stream
        finally:
            stdio.unsubscribe(sub)
            for task in tasks + aux:
                task.cancel()
            await asyncio.gather(*tasks, *aux, return_exceptions=True)
        return 0

    async def port_forward(self, request: StreamRequest, stream: PortStream) -> None:
        target = _payload(request, PodTarget, "not a port-forward request")
        try:
            sb = self.sandboxes.get(target.sandbox_id)
        except NotFoundError as e:
            raise CommandFailedError(str(e)) from e
        if sb.state != READY:
            msg = f"sandbox {go_quote(sb.id)} is not running"
            raise CommandFailedError(msg)
        sock = await socket_in_netns(sb.netns_path)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, ("127.0.0.1", stream.port))
        except OSError as e:
            sock.close()
            # containerd's text, with Go's lower-case errno text.
            reason = os.strerror(e.errno).lower() if e.errno else str(e)
            msg = (
                f"failed to connect to localhost:{stream.port} inside namespace "
                f"{go_quote(sb.id)}, IPv4: dial tcp4 127.0.0.1:{stream.port}: connect: {reason}"
            )
            raise ConnectionRefusedError(msg) from e
        reader, writer = await asyncio.open_connection(sock=sock, limit=RELAY_CHUNK)

        async def to_pod() -> None:
            try:
                while data := await stream.input.read():
                    writer.write(data)
                    await writer.drain()
                if writer.can_write_eof():
                    writer.write_eof()
            except ConnectionError:
                return
            await asyncio.Event().wait()  # the pod side's end finishes the forward

        async def from_pod() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(RELAY_CHUNK):
                    await stream.output.write(data)

        tasks = [asyncio.ensure_future(to_pod()), asyncio.ensure_future(from_pod())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _open_sides(fifos: ProcessFifos, fds: dict[str, int]) -> None:
    """Open our side of each FIFO into ``fds`` (by stream name), without waiting."""
    for name in ("stdin", "stdout", "stderr"):
        path = getattr(fifos, name)
        if path:
            fds[name] = open_writer(path) if name == "stdin" else open_reader(path)


# -- network namespaces -----------------------------------------------------------------


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _create_in(netns: str, fut: Future[socket.socket]) -> None:
    try:
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # This thread only: it ends right after, so it never needs to go back.
            _setns(fd)
        finally:
            os.close(fd)
        fut.set_result(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    except BaseException as e:
        fut.set_exception(e)


async def socket_in_netns(netns: str) -> socket.socket:
    """A non-blocking TCP/IPv4 socket of the network namespace pinned at ``netns``.

    ``netns`` "" is the daemon's own namespace (a host-network pod).

    Raises:
        OSError: the namespace cannot be entered.
    """
    if not netns:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    else:
        fut: Future[socket.socket] = Future()
        thread = threading.Thread(target=_create_in, args=(netns, fut), daemon=True)
        thread.start()
        sock = await asyncio.wrap_future(fut)
    sock.setblocking(False)
    return sock
