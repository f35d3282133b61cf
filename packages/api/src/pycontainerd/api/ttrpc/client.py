"""The ttrpc client: unary calls over one unix-socket connection.

Calls may run concurrently; each takes the next odd stream id, and responses
are matched back by id. A status other than OK comes back as the errdefs kind
of its code (see :mod:`pycontainerd.api.status`), with the sentinel the peer
appended removed from the message so ``str()`` reads like the peer's text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf import message
from google.protobuf.message import DecodeError

from pycontainerd.api.status import error_from_code
from pycontainerd.api.ttrpc import _wire
from pycontainerd.api.ttrpc.ttrpc_pb2 import Request, Response
from pycontainerd.core.closing import AsyncClosing
from pycontainerd.core.errdefs import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    ResourceExhaustedError,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pycontainerd.api.ttrpc.services import ServiceSpec

__all__ = ["Client", "ServiceClient", "socket_path"]

log = logging.getLogger(__name__)

M = TypeVar("M", bound=message.Message)

_MAX_STREAM_ID = 0xFFFFFFFF


def socket_path(address: str) -> str:
    """The filesystem (or abstract) socket path of a ttrpc ``address``.

    Accepts ``unix:///path``, a bare path, and ``@name`` / ``unix://@name`` for
    an abstract socket (as containerd's shims of 1.2-1.4 used).

    Raises:
        InvalidArgumentError: the address is empty or not a unix address.
    """
    path = address.removeprefix("unix://")
    if not path or "://" in path:
        msg = f"ttrpc address {address!r} is not a unix socket address"
        raise InvalidArgumentError(msg)
    if path.startswith("@"):
        return "\0" + path[1:]
    return path


def _encode_request(
    service: str,
    method: str,
    payload: bytes,
    *,
    timeout: float | None,
    metadata: Mapping[str, str | Sequence[str]] | None,
    namespace: str | None,
) -> bytes:
    req = Request(service=service, method=method, payload=payload)
    if timeout is not None:
        req.timeout_nano = max(int(timeout * 1e9), 1)
    if metadata:
        for key, values in metadata.items():
            if isinstance(values, str):
                req.metadata.add(key=key, value=values)
            else:
                for value in values:
                    req.metadata.add(key=key, value=value)
    if namespace is not None:
        req.metadata.add(key=_wire.NAMESPACE_KEY, value=namespace)
    data = req.SerializeToString()
    if len(data) > _wire.MESSAGE_LENGTH_MAX:
        raise _wire.oversize_error(len(data))
    return data


class _ClientProtocol(_wire.FramedProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.error: Exception | None = None

    def frame_received(self, stream_id: int, mtype: int, flags: int, payload: bytes) -> None:
        if mtype != _wire.TYPE_RESPONSE:
            log.debug("ttrpc client: ignoring frame type %d on stream %d", mtype, stream_id)
            return
        fut = self.pending.get(stream_id)
        if fut is None or fut.done():
            log.debug("ttrpc client: response for unknown stream %d dropped", stream_id)
            return
        if not payload:
            fut.set_result(b"")
            return
        resp = Response()
        try:
            resp.ParseFromString(payload)
        except DecodeError as exc:
            fut.set_exception(InternalError(f"ttrpc: invalid response: {exc}"))
            return
        code = resp.status.code
        if code:
            fut.set_exception(error_from_code(code, resp.status.message))
        else:
            fut.set_result(resp.payload)

    def oversize_received(self, stream_id: int, mtype: int, length: int) -> None:
        fut = self.pending.get(stream_id)
        if fut is not None and not fut.done():
            fut.set_exception(_wire.oversize_error(length))

    def connection_lost(self, exc: Exception | None) -> None:
        self.error = _wire.ClosedError()
        if exc is not None:
            self.error.__cause__ = exc
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(_wire.ClosedError())
        self.pending.clear()
        if not self.closed.done():
            self.closed.set_result(None)


class Client(AsyncClosing):
    """A ttrpc connection that makes unary calls.

    Create it with :meth:`connect`; use it as an async context manager or call
    :meth:`close`. Methods are safe to call concurrently from one event loop.

    Example:
        >>> async with await Client.connect("unix:///run/shim.sock") as c:  # doctest: +SKIP
        ...     resp = await c.call("containerd.task.v2.Task", "Connect",
        ...                         task_pb2.ConnectRequest(id="t1"), task_pb2.ConnectResponse)
    """

    def __init__(self, transport: asyncio.Transport, protocol: _ClientProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._next_id = 1

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a connect deadline, like Go dial timeouts
    ) -> Client:
        """Connect to the ttrpc server at ``address`` (see :func:`socket_path`).

        Raises:
            UnavailableError: the socket cannot be reached (no such socket,
                refused, or ``timeout`` seconds passed).
            InvalidArgumentError: ``address`` is not a unix address.
        """
        from pycontainerd.core.errdefs import UnavailableError

        path = socket_path(address)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_ClientProtocol, path)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or "timed out"
            msg = f"ttrpc: cannot connect to {address}: {reason}"
            raise UnavailableError(msg) from exc
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - unix stream socket
        return cls(transport, protocol)

    @property
    def closed(self) -> bool:
        """Whether the connection is closed (by either side)."""
        return self._protocol.error is not None or self._transport.is_closing()

    async def call(
        self,
        service: str,
        method: str,
        request: message.Message,
        response_type: type[M],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - also sent to the server
        metadata: Mapping[str, str | Sequence[str]] | None = None,
        namespace: str | None = None,
    ) -> M:
        """Call ``service``/``method`` with ``request``; return a ``response_type``.

        Args:
            service: full service name, e.g. ``containerd.task.v2.Task``.
            method: method name, e.g. ``State``.
            request: the request message.
            response_type: the message class of the result.
            timeout: seconds; sent to the server as ``timeout_nano`` and
                enforced here (DeadlineExceededError when it passes).
            metadata: request metadata; a key may carry several values.
            namespace: shorthand for metadata ``containerd-namespace-ttrpc``.

        Raises:
            ContainerdError: the kind of the status the server answered.
            DeadlineExceededError: ``timeout`` passed.
            ResourceExhaustedError: the request is larger than 4 MiB.
            ClosedError: the connection closed before the answer came.
        """
        payload = await self.call_raw(
            service,
            method,
            request.SerializeToString(),
            timeout=timeout,
            metadata=metadata,
            namespace=namespace,
        )
        what = f"ttrpc: cannot decode {response_type.DESCRIPTOR.full_name}"
        return _wire.decode(response_type(), payload, what)

    async def call_raw(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - also sent to the server
        metadata: Mapping[str, str | Sequence[str]] | None = None,
        namespace: str | None = None,
    ) -> bytes:
        """Like :meth:`call`, with the request and result as marshalled bytes."""
        protocol = self._protocol
        if protocol.error is not None or self._transport.is_closing():
            raise _wire.ClosedError
        data = _encode_request(
            service, method, payload, timeout=timeout, metadata=metadata, namespace=namespace
        )
        stream_id = self._next_id
        if stream_id > _MAX_STREAM_ID:
            msg = "ttrpc: stream ids of this connection are used up"
            raise ResourceExhaustedError(msg)
        self._next_id = stream_id + 2
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        protocol.pending[stream_id] = fut
        try:
            self._transport.write(_wire.HEADER.pack(len(data), stream_id, 1, 0) + data)
            if timeout is None:
                return await fut
            try:
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
                raise DeadlineExceededError from None
        finally:
            protocol.pending.pop(stream_id, None)

    def close(self) -> None:
        """Close the connection; calls in flight fail with :class:`ClosedError`."""
        self._transport.close()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await asyncio.shield(self._protocol.closed)

    async def aclose(self) -> None:
        """Close the connection and wait until it is closed."""
        self.close()
        await self.wait_closed()


class ServiceClient:
    """Calls of one :class:`ServiceSpec` over a :class:`Client`.

    The request must be of the spec's request type; the result is of the
    spec's response type.
    """

    def __init__(self, client: Client, spec: ServiceSpec, *, namespace: str | None = None) -> None:
        self.client = client
        self.spec = spec
        self.namespace = namespace

    async def call(
        self,
        method: str,
        request: message.Message,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - also sent to the server
        metadata: Mapping[str, str | Sequence[str]] | None = None,
    ) -> Any:
        """Call ``method`` of the service.

        Raises:
            UnimplementedError: the spec has no such method.
            InvalidArgumentError: ``request`` is not the method's request type.
        """
        req_type, resp_type = self.spec.types(method)
        if not isinstance(request, req_type):
            msg = (
                f"{self.spec.name}/{method} takes {req_type.DESCRIPTOR.full_name}, "
                f"not {type(request).DESCRIPTOR.full_name}"
            )
            raise InvalidArgumentError(msg)
        return await self.client.call(
            self.spec.name,
            method,
            request,
            resp_type,
            timeout=timeout,
            metadata=metadata,
            namespace=self.namespace,
        )
