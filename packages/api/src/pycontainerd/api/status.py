"""Status codes and the errdefs mapping, without grpc.

containerd carries errors across gRPC and ttrpc the same way: a status code
(the canonical ``google.rpc.Code`` numbers) plus a message that ends with the
errdefs sentinel text (``namespace "x" must be empty, but it still has blobs:
failed precondition``). This module holds that mapping in both directions as
plain integers so the shim and the ttrpc package can use it without importing
grpc; :mod:`pycontainerd.api.errgrpc` adds the ``grpc.StatusCode`` face.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import enum
from typing import TYPE_CHECKING

from pycontainerd.core import errdefs

if TYPE_CHECKING:
    from google.rpc import status_pb2


class Code(enum.IntEnum):
    """The canonical status codes (``google.rpc.Code``), as sent on the wire."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# errdefs kind -> code (server side). Conflict and NotModified have no code of
# their own: containerd sends them as FailedPrecondition and the client tells
# them apart by the sentinel at the end of the message.
_KIND_TO_CODE: dict[type, Code] = {
    errdefs.UnknownError: Code.UNKNOWN,
    errdefs.InvalidArgumentError: Code.INVALID_ARGUMENT,
    errdefs.NotFoundError: Code.NOT_FOUND,
    errdefs.AlreadyExistsError: Code.ALREADY_EXISTS,
    errdefs.FailedPreconditionError: Code.FAILED_PRECONDITION,
    errdefs.ConflictError: Code.FAILED_PRECONDITION,
    errdefs.NotModifiedError: Code.FAILED_PRECONDITION,
    errdefs.UnavailableError: Code.UNAVAILABLE,
    errdefs.UnimplementedError: Code.UNIMPLEMENTED,
    errdefs.OutOfRangeError: Code.OUT_OF_RANGE,
    errdefs.DataLossError: Code.DATA_LOSS,
    errdefs.AbortedError: Code.ABORTED,
    errdefs.PermissionDeniedError: Code.PERMISSION_DENIED,
    errdefs.ResourceExhaustedError: Code.RESOURCE_EXHAUSTED,
    errdefs.CanceledError: Code.CANCELLED,
    errdefs.DeadlineExceededError: Code.DEADLINE_EXCEEDED,
    errdefs.UnauthenticatedError: Code.UNAUTHENTICATED,
    errdefs.InternalError: Code.INTERNAL,
}

# code -> errdefs kind (client side); FailedPrecondition is refined by suffix.
_CODE_TO_KIND: dict[Code, type[errdefs.ContainerdError]] = {
    Code.CANCELLED: errdefs.CanceledError,
    Code.UNKNOWN: errdefs.UnknownError,
    Code.INVALID_ARGUMENT: errdefs.InvalidArgumentError,
    Code.DEADLINE_EXCEEDED: errdefs.DeadlineExceededError,
    Code.NOT_FOUND: errdefs.NotFoundError,
    Code.ALREADY_EXISTS: errdefs.AlreadyExistsError,
    Code.PERMISSION_DENIED: errdefs.PermissionDeniedError,
    Code.RESOURCE_EXHAUSTED: errdefs.ResourceExhaustedError,
    Code.FAILED_PRECONDITION: errdefs.FailedPreconditionError,
    Code.ABORTED: errdefs.AbortedError,
    Code.OUT_OF_RANGE: errdefs.OutOfRangeError,
    Code.UNIMPLEMENTED: errdefs.UnimplementedError,
    Code.INTERNAL: errdefs.InternalError,
    Code.UNAVAILABLE: errdefs.UnavailableError,
    Code.DATA_LOSS: errdefs.DataLossError,
    Code.UNAUTHENTICATED: errdefs.UnauthenticatedError,
}


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` followed by its causes and contexts, each once."""
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        out.append(cur)
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return out


def resolve(exc: BaseException) -> errdefs.ContainerdError | None:
    """The errdefs error that classifies ``exc``: itself or one it was raised from.

    A bare :class:`TimeoutError` and :class:`asyncio.CancelledError` classify as
    deadline exceeded and canceled, as Go's ``context`` errors do.
    """
    for cur in _chain(exc):
        if isinstance(cur, errdefs.ContainerdError):
            return cur
        if isinstance(cur, TimeoutError):
            return errdefs.DeadlineExceededError()
        if isinstance(cur, asyncio.CancelledError):
            return errdefs.CanceledError()
    return None


def code_of(exc: BaseException) -> Code:
    """The status code containerd sends for ``exc`` (Unknown when unclassified)."""
    err = resolve(exc)
    if err is None:
        return Code.UNKNOWN
    for kind in type(err).__mro__:
        code = _KIND_TO_CODE.get(kind)
        if code is not None:
            return code
    return Code.UNKNOWN


def message_of(exc: BaseException) -> str:
    """The status message containerd sends for ``exc``.

    Errors of a known kind end with the kind's sentinel text; an unclassified
    error sends its own text (or its type name when it has none), as Go sends
    ``err.Error()`` unchanged for errors errdefs does not know.

    Unknown-coded errors send their text alone, without ``": unknown"``:
    containerd's Unknown errors are plain Go errors (errdefs' ``ErrUnknown``
    only marks what a peer sent as Unknown, and 2.x prints it as the bare
    text), so a 2.x client prints the same text for both daemons and a 1.x
    client adds ``": unknown"`` itself for both.
    """
    err = resolve(exc)
    text = str(exc)
    if err is None:
        return text or type(exc).__name__
    if code_of(err) is Code.UNKNOWN:
        bare = err.message if err is exc else text
        return rebase_message(errdefs.UnknownError, bare) or errdefs.UnknownError.sentinel
    sentinel = err.sentinel
    if not text:
        return str(err)
    if text == sentinel or text.endswith(f": {sentinel}"):
        return text
    return f"{text}: {sentinel}"


def kind_for(code: int, message: str = "") -> type[errdefs.ContainerdError]:
    """The errdefs kind a client maps ``code`` to (``message`` refines FailedPrecondition).

    Raises:
        ValueError: ``code`` is OK, which is not an error.
    """
    if code == Code.OK:
        msg = "status code OK is not an error"
        raise ValueError(msg)
    try:
        kind = _CODE_TO_KIND[Code(code)]
    except ValueError:
        return errdefs.UnknownError
    if kind is errdefs.FailedPreconditionError:
        for refined in (errdefs.ConflictError, errdefs.NotModifiedError):
            if message == refined.sentinel or message.endswith(f": {refined.sentinel}"):
                return refined
    return kind


def rebase_message(kind: type[errdefs.ContainerdError], message: str) -> str:
    """``message`` without one trailing ``": <sentinel>"`` of ``kind``.

    The kind puts the sentinel back when the error is printed, so a message that
    crossed the wire does not end up with the sentinel twice.
    """
    if message == kind.sentinel:
        return ""
    suffix = f": {kind.sentinel}"
    if message.endswith(suffix):
        return message[: -len(suffix)]
    return message


def error_from_code(code: int, message: str) -> errdefs.ContainerdError:
    """The errdefs error for a non-OK status received from a peer.

    Raises:
        ValueError: ``code`` is OK.
    """
    kind = kind_for(code, message)
    return kind(rebase_message(kind, message))


def to_status_proto(exc: BaseException) -> status_pb2.Status:
    """``exc`` as a ``google.rpc.Status`` (code and message, no details)."""
    from google.rpc import status_pb2

    return status_pb2.Status(code=int(code_of(exc)), message=message_of(exc))


def error_from_status(status: status_pb2.Status) -> errdefs.ContainerdError | None:
    """The errdefs error ``status`` describes, or None when it is OK."""
    if status.code == Code.OK:
        return None
    return error_from_code(status.code, status.message)
