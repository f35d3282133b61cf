"""errdefs errors to gRPC status and back (containerd's ``errgrpc``).

Server side, a servicer wraps its body in :func:`aborting_on_error`; an errdefs
error raised inside ends the call with the matching status code and a message
that ends with the kind's sentinel, exactly as containerd's Go services answer.
Client side, :func:`from_rpc_error` turns a failed call back into the errdefs
kind, dropping the sentinel the server appended so it is not printed twice.

The integer table lives in :mod:`pycontainerd.api.status` (grpc-free, used by
ttrpc); this module adds the ``grpc.StatusCode`` face.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc

from pycontainerd.api import status
from pycontainerd.api.grpcutil import request_scope
from pycontainerd.core import errdefs

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from google.rpc import status_pb2

__all__ = [
    "aborting_on_error",
    "code_to_status_code",
    "from_rpc_error",
    "from_status_proto",
    "status_code_to_code",
    "to_grpc_message",
    "to_status_code",
    "to_status_proto",
    "unary_rpc",
]

log = logging.getLogger(__name__)

_BY_NUMBER: dict[int, grpc.StatusCode] = {sc.value[0]: sc for sc in grpc.StatusCode}


def code_to_status_code(code: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` with wire number ``code`` (UNKNOWN if out of range)."""
    return _BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN)


def status_code_to_code(sc: grpc.StatusCode) -> status.Code:
    """The wire number of ``sc``."""
    return status.Code(sc.value[0])


def to_status_code(exc: BaseException) -> grpc.StatusCode:
    """The status code containerd sends for ``exc``.

    An errdefs error (or one ``exc`` was raised from) maps by kind; a
    :class:`TimeoutError` is DEADLINE_EXCEEDED, a cancellation CANCELLED, a
    failed nested gRPC call keeps its code, anything else is UNKNOWN.
    """
    if isinstance(exc, grpc.RpcError) and status.resolve(exc) is None:
        return _rpc_code(exc)
    return code_to_status_code(status.code_of(exc))


def to_grpc_message(exc: BaseException) -> str:
    """The status message containerd sends for ``exc``.

    For errdefs kinds it ends with the sentinel, e.g.
    ``namespace "x" must be empty, but it still has blobs: failed precondition``.
    A failed nested gRPC call passes its details through unchanged.
    """
    if isinstance(exc, grpc.RpcError) and status.resolve(exc) is None:
        return _rpc_details(exc)
    return status.message_of(exc)


def from_rpc_error(err: grpc.RpcError) -> errdefs.ContainerdError:
    """The errdefs error a failed gRPC call stands for.

    The kind follows the status code (FailedPrecondition whose message ends in
    ``conflict`` or ``not modified`` becomes that kind); the message is kept,
    minus one trailing ``": <sentinel>"``, so ``str()`` of the result reads like
    the server's message. The result is raised ``from err`` by callers that want
    the chain; it is returned, not raised, here.
    """
    code = _rpc_code(err)
    message = _rpc_details(err)
    if code is grpc.StatusCode.OK:
        return errdefs.UnknownError(message)
    return status.error_from_code(code.value[0], message)


def to_status_proto(exc: BaseException) -> status_pb2.Status:
    """``exc`` as a ``google.rpc.Status`` (for ttrpc responses and introspection)."""
    from google.rpc import status_pb2

    return status_pb2.Status(
        code=status_code_to_code(to_status_code(exc)), message=to_grpc_message(exc)
    )


def from_status_proto(st: status_pb2.Status) -> errdefs.ContainerdError | None:
    """The errdefs error a ``google.rpc.Status`` describes; None when it is OK."""
    return status.error_from_status(st)


def aborting_on_error(context: grpc.aio.ServicerContext[Any, Any]) -> _AbortingOnError:
    """Map errors raised in the block to a gRPC status on ``context``.

    - an errdefs error aborts with its kind's code and sentinel-terminated message;
    - a failed nested gRPC call aborts with that call's code and details;
    - :class:`asyncio.CancelledError` and an abort already in progress pass through;
    - anything else is logged with its traceback and aborts with UNKNOWN and the
      exception's text, so clients see what went wrong.

    Example:
        >>> async def Info(self, request, context):  # doctest: +SKIP
        ...     async with aborting_on_error(context):
        ...         info = await self._store.info(request.digest)
        ...     return content_pb2.InfoResponse(info=info_to_proto(info))
    """
    return _AbortingOnError(context)


class _AbortingOnError:
    """:func:`aborting_on_error`'s block: a plain class, entered on every RPC."""

    __slots__ = ("_context",)

    def __init__(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self._context = context

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is None or not isinstance(exc, Exception):
            return  # no error, or CancelledError and other BaseExceptions
        if isinstance(exc, grpc.aio.AbortError):
            return
        code = to_status_code(exc)
        message = to_grpc_message(exc)
        if code is grpc.StatusCode.UNKNOWN and status.resolve(exc) is None:
            log.error("unexpected error in gRPC handler", exc_info=exc)
        await self._context.abort(code, message)  # raises AbortError


_Method = TypeVar("_Method", bound="Callable[..., Awaitable[Any]]")


def unary_rpc(method: _Method) -> _Method:
    """Run a servicer's unary method in its call's scope, errors mapped to the status.

    The opening every unary RPC body had: the call's namespace and lease
    current (:func:`~pycontainerd.api.grpcutil.request_scope`) and errors
    mapped by :func:`aborting_on_error`, around the whole body. A
    ``context.abort`` in the body passes through. Streaming methods keep
    :class:`~pycontainerd.api.grpcutil.CallScope`: a scope must not stay set
    across a ``yield``.

    Example:
        >>> @unary_rpc  # doctest: +SKIP
        ... async def Info(self, request, context):
        ...     info = await self._store.info(request.digest)
        ...     return content_pb2.InfoResponse(info=info_to_proto(info))
    """

    @functools.wraps(method)
    async def call(self: object, request: object, context: Any) -> Any:
        with request_scope(context):
            async with _AbortingOnError(context):
                return await method(self, request, context)

    return cast("_Method", call)


def _rpc_code(err: grpc.RpcError) -> grpc.StatusCode:
    code = getattr(err, "code", None)
    value = code() if callable(code) else None
    return value if isinstance(value, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _rpc_details(err: grpc.RpcError) -> str:
    details = getattr(err, "details", None)
    value = details() if callable(details) else None
    return value if isinstance(value, str) else str(err)


@contextlib.contextmanager
def rpc_errors() -> Iterator[None]:
    """Re-raise a failed gRPC call inside the block as its errdefs kind (client side)."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err
