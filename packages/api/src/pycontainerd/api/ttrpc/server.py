"""The ttrpc server: unary methods served over unix sockets.

Services are registered by name with a handler per method (or, typed, with a
:class:`~pycontainerd.api.ttrpc.services.ServiceSpec` and an object whose
async methods take ``(ctx, request)``). Each request runs in its own task, so
one connection serves many calls at once. Protocol errors are answered the
way containerd's Go ttrpc answers them, with the same status codes and texts:

- even stream id: InvalidArgument ``StreamID must be odd for client initiated streams``;
- a request id not above the last one: InvalidArgument
  ``StreamID cannot be re-used and must increment``;
- unknown service or method: Unimplemented ``service <name>`` / ``method <name>``;
- a frame above 4 MiB: its payload is discarded and the call gets
  ResourceExhausted; the connection stays usable.

Differences from Go's server: a response above 4 MiB is answered with
ResourceExhausted (Go closes the connection), and a client timeout cancels
the handler task when it passes (Go only cancels the handler's context).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import stat
import struct
from typing import TYPE_CHECKING, Any, Final

from google.protobuf import message
from google.protobuf.message import DecodeError

from pycontainerd.api.status import Code, code_of, message_of, resolve
from pycontainerd.api.ttrpc import _wire
from pycontainerd.api.ttrpc.services import CallContext, Handler, ServiceSpec
from pycontainerd.api.ttrpc.ttrpc_pb2 import Request, Response
from pycontainerd.api.varint import uvarint
from pycontainerd.core.closing import AsyncClosing
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    InternalError,
    InvalidArgumentError,
    UnknownError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Server"]

log = logging.getLogger(__name__)


_UCRED: Final = struct.Struct("3i")
"""``struct ucred``: pid, uid, gid (``SO_PEERCRED``)."""


def _same_user(transport: asyncio.BaseTransport) -> bool:
    """Whether the peer of a unix connection runs as our effective uid and gid.

    containerd's ttrpc servers (the daemon's and the shims') accept only
    such peers (``UnixSocketRequireSameUser``); anyone else who can reach the
    socket is refused before a request is read.
    """
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return True
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except OSError:
        return False
    pid, uid, gid = _UCRED.unpack(raw)
    if uid == os.geteuid() and gid == os.getegid():
        return True
    log.warning(
        "ttrpc: refused a connection from pid %d (uid %d, gid %d): not the same user", pid, uid, gid
    )
    return False


class _Connection(_wire.FramedProtocol):
    """One accepted connection: dispatches requests, writes responses."""

    def __init__(self, server: Server) -> None:
        super().__init__()
        self.server = server
        self.last_id = 0
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.draining = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._connections.add(self)
        if self.server._closing or (self.server.require_same_user and not _same_user(transport)):
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        for task in list(self.tasks.values()):
            task.cancel()
        self.server._forget(self)

    # -- receiving ---------------------------------------------------------

    def frame_received(self, stream_id: int, mtype: int, flags: int, payload: bytes) -> None:
        if stream_id % 2 != 1:
            self.send_status(
                stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID must be odd for client initiated streams",
            )
            return
        if mtype == _wire.TYPE_DATA:
            # Only unary methods are served: data is valid on no stream.
            if stream_id not in self.tasks:
                self.send_status(stream_id, Code.INVALID_ARGUMENT, "StreamID is no longer active")
            return
        if mtype != _wire.TYPE_REQUEST:
            log.debug("ttrpc: ignoring frame of type %d on stream %d", mtype, stream_id)
            return
        if stream_id <= self.last_id:
            self.send_status(
                stream_id,
                Code.INVALID_ARGUMENT,
                "StreamID cannot be re-used and must increment",
            )
            return
        self.last_id = stream_id
        self.request_received(stream_id, payload)

    def request_received(self, stream_id: int, payload: bytes) -> None:
        req = Request()
        try:
            req.ParseFromString(payload)
        except DecodeError as exc:
            self.send_status(stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}")
            return
        methods = self.server._services.get(req.service)
        if methods is None:
            self.send_status(stream_id, Code.UNIMPLEMENTED, f"service {req.service}")
            return
        handler = methods.get(req.method)
        if handler is None:
            self.send_status(stream_id, Code.UNIMPLEMENTED, f"method {req.method}")
            return
        loop = asyncio.get_running_loop()
        metadata: dict[str, list[str]] = {}
        for kv in req.metadata:
            metadata.setdefault(kv.key, []).append(kv.value)
        timeout = req.timeout_nano / 1e9 if req.timeout_nano > 0 else None
        ctx = CallContext(
            req.service,
            req.method,
            metadata,
            None if timeout is None else loop.time() + timeout,
        )
        task = loop.create_task(self.run(stream_id, handler, ctx, req.payload, timeout))
        self.tasks[stream_id] = task
        task.add_done_callback(functools.partial(self._task_done, stream_id))

    def oversize_received(self, stream_id: int, mtype: int, length: int) -> None:
        err = _wire.oversize_error(length)
        self.send_status(stream_id, Code.RESOURCE_EXHAUSTED, err.message)

    # -- serving -----------------------------------------------------------

    async def run(
        self,
        stream_id: int,
        handler: Handler,
        ctx: CallContext,
        payload: bytes,
        timeout: float | None,  # noqa: ASYNC109 - the client's timeout_nano
    ) -> None:
        try:
            if timeout is None:
                body = _marshal(await handler(ctx, payload))
            else:
                async with asyncio.timeout(timeout):
                    body = _marshal(await handler(ctx, payload))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.lost or (task is not None and task.cancelling()):
                raise
            self.send_status(stream_id, Code.CANCELLED, "context canceled")
            return
        except Exception as exc:
            if resolve(exc) is None:
                log.error(
                    "ttrpc: unexpected error in /%s/%s",
                    ctx.service,
                    ctx.method,
                    exc_info=exc,
                )
            self.send_status(stream_id, code_of(exc), message_of(exc))
            return
        # Success: no status field (Go leaves it nil) and the payload as field 2.
        data = b"\x12" + uvarint(len(body)) + body if body else b""
        if len(data) > _wire.MESSAGE_LENGTH_MAX:
            log.error(
                "ttrpc: response of /%s/%s is %d bytes, above the limit",
                ctx.service,
                ctx.method,
                len(data),
            )
            self.send_status(
                stream_id, Code.RESOURCE_EXHAUSTED, _wire.oversize_error(len(data)).message
            )
            return
        self.write(stream_id, data)

    def _task_done(self, stream_id: int, task: asyncio.Task[None]) -> None:
        self.tasks.pop(stream_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("ttrpc: request task failed", exc_info=task.exception())
        if self.draining and not self.tasks and self.transport is not None:
            self.transport.close()

    # -- sending -----------------------------------------------------------

    def send_status(self, stream_id: int, code: int, text: str) -> None:
        """Answer ``stream_id`` with a non-OK status."""
        resp = Response()
        resp.status.code = code
        resp.status.message = text
        self.write(stream_id, resp.SerializeToString())

    def write(self, stream_id: int, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(_wire.HEADER.pack(len(data), stream_id, _wire.TYPE_RESPONSE, 0) + data)

    def close(self, *, drain: bool) -> None:
        """Close now, or (``drain``) once the calls in flight have answered."""
        if self.transport is None:
            return
        if drain and self.tasks:
            self.draining = True
            return
        for task in list(self.tasks.values()):
            task.cancel()
        self.transport.close()


class Server(AsyncClosing):
    """A ttrpc server.

    Example:
        >>> server = Server()  # doctest: +SKIP
        >>> server.register_service(TASK_SPEC, TaskService())
        >>> await server.listen_unix("/run/x/shim.sock", mode=0o600)
        >>> ...
        >>> await server.shutdown(grace=5)
    """

    def __init__(self, *, require_same_user: bool = True) -> None:
        self.require_same_user = require_same_user
        self._services: dict[str, dict[str, Handler]] = {}
        self._listeners: list[tuple[asyncio.Server, str | None]] = []
        self._connections: set[_Connection] = set()
        self._closing = False
        self._closed = asyncio.Event()
        self._no_connections = asyncio.Event()
        self._no_connections.set()

    # -- registration ------------------------------------------------------

    def register(self, service: str, methods: Mapping[str, Handler]) -> None:
        """Serve ``service`` with one handler per method name.

        A handler is ``async (ctx: CallContext, request: bytes) -> Message | bytes``.

        Raises:
            AlreadyExistsError: ``service`` is registered already.
            InvalidArgumentError: the service name is empty.
        """
        if not service:
            msg = "ttrpc service name must not be empty"
            raise InvalidArgumentError(msg)
        if service in self._services:
            msg = f"duplicate service {service} registered"
            raise AlreadyExistsError(msg)
        self._services[service] = dict(methods)

    def register_service(self, spec: ServiceSpec, impl: object) -> None:
        """Serve ``spec`` with the same-named async methods of ``impl``.

        Each method is called as ``await impl.<Method>(ctx, request)`` with the
        decoded request and must return an instance of the response type.
        Methods ``impl`` does not have are answered Unimplemented.

        Raises:
            AlreadyExistsError: the service is registered already.
        """
        methods: dict[str, Handler] = {}
        for name, (req_type, resp_type) in spec.methods.items():
            fn = getattr(impl, name, None)
            if fn is not None:
                methods[name] = _typed_handler(spec.name, name, fn, req_type, resp_type)
        self.register(spec.name, methods)

    @property
    def services(self) -> list[str]:
        """Names of the registered services."""
        return sorted(self._services)

    # -- listening ---------------------------------------------------------

    async def listen_unix(self, path: str, *, mode: int | None = None) -> None:
        """Accept connections on a new unix socket at ``path``.

        A stale socket file at ``path`` is replaced. The socket file is removed
        again when the server closes.

        Raises:
            FailedPreconditionError: the server is closing.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(lambda: _Connection(self), path)
        if mode is not None:
            os.chmod(path, mode)
        self._listeners.append((listener, path))

    async def serve_socket(self, sock: socket.socket) -> None:
        """Accept connections on ``sock``, a bound and listening unix socket.

        Raises:
            FailedPreconditionError: the server is closing.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        listener = await loop.create_unix_server(lambda: _Connection(self), sock=sock)
        self._listeners.append((listener, None))

    def _check_open(self) -> None:
        if self._closing:
            from pycontainerd.core.errdefs import FailedPreconditionError

            msg = "ttrpc: server closed"
            raise FailedPreconditionError(msg)

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if not self._connections:
            self._no_connections.set()
            if self._closing:
                self._closed.set()

    # -- closing -----------------------------------------------------------

    def _stop_listening(self) -> None:
        self._closing = True
        for listener, path in self._listeners:
            listener.close()
            if path is not None and not path.startswith("\0"):
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(os.lstat(path).st_mode):
                        os.unlink(path)
        self._listeners.clear()
        if self._connections:
            self._no_connections.clear()

    def close(self) -> None:
        """Stop listening and close every connection; calls in flight are cancelled."""
        self._stop_listening()
        for conn in list(self._connections):
            conn.close(drain=False)
        if not self._connections:
            self._closed.set()

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop listening, let calls in flight answer, then close.

        Idle connections close at once; busy ones close after their last
        answer. After ``grace`` seconds (if given) the rest is closed as by
        :meth:`close`.
        """
        self._stop_listening()
        for conn in list(self._connections):
            conn.close(drain=True)
        try:
            async with asyncio.timeout(grace):
                await self._no_connections.wait()
        except TimeoutError:
            log.warning("ttrpc: %d connections still busy after grace", len(self._connections))
        await self.aclose()

    async def aclose(self) -> None:
        """Close as :meth:`close` does, and wait until every connection is gone."""
        self.close()
        await self._no_connections.wait()

    async def wait_closed(self) -> None:
        """Wait until :meth:`close` or :meth:`shutdown` has finished."""
        await self._closed.wait()


def _marshal(result: object) -> bytes:
    if isinstance(result, bytes):
        return result
    if isinstance(result, message.Message):
        return result.SerializeToString()
    # Go's ttrpc refuses a nil response with this text (code Unknown).
    msg = "ttrpc: marshal called with nil"
    raise UnknownError(msg)


def _typed_handler(
    service: str,
    method: str,
    fn: Any,
    req_type: type[message.Message],
    resp_type: type[message.Message],
) -> Handler:
    async def handle(ctx: CallContext, payload: bytes) -> message.Message:
        req = _wire.decode(req_type(), payload, "ttrpc: error unmarshalling payload")
        resp = await fn(ctx, req)
        if not isinstance(resp, resp_type):
            msg = (
                f"/{service}/{method} returned {type(resp).__name__}, "
                f"not {resp_type.DESCRIPTOR.full_name}"
            )
            raise InternalError(msg)
        return resp

    return handle
