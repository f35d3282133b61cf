"""Error kinds shared by every pycontainerd subsystem (containerd's ``errdefs``).

Subsystems raise these; only ``pycontainerd.api.errgrpc`` knows how they map to
gRPC status codes. Each kind carries containerd's sentinel text, and ``str()``
of an error ends with it, the way containerd's wrapped Go errors read on the
wire: ``namespace "x" must be empty, but it still has blobs: failed precondition``.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import ClassVar


class ContainerdError(Exception):
    """Base of every error kind. ``sentinel`` is containerd's error text."""

    sentinel: ClassVar[str] = "unknown"

    def __init__(self, message: str = "") -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        if not self.message:
            return self.sentinel
        if self.message == self.sentinel or self.message.endswith(f": {self.sentinel}"):
            return self.message
        return f"{self.message}: {self.sentinel}"


class UnknownError(ContainerdError):
    """An error of no particular kind (gRPC Unknown)."""

    sentinel = "unknown"


class InvalidArgumentError(ContainerdError):
    """The request is malformed (an identifier, digest, filter, label, ...)."""

    sentinel = "invalid argument"


class NotFoundError(ContainerdError):
    """The object does not exist."""

    sentinel = "not found"


class AlreadyExistsError(ContainerdError):
    """The object exists already."""

    sentinel = "already exists"


class FailedPreconditionError(ContainerdError):
    """The system is not in a state where the operation can run."""

    sentinel = "failed precondition"


class UnavailableError(ContainerdError):
    """The resource is busy or temporarily unreachable (a locked ingest ref, ...)."""

    sentinel = "unavailable"


class UnimplementedError(ContainerdError):
    """The operation is not implemented (named so as not to shadow the builtin)."""

    sentinel = "not implemented"


class OutOfRangeError(ContainerdError):
    """A value (offset, size) is outside the permitted range."""

    sentinel = "out of range"


class DataLossError(ContainerdError):
    """Data was lost or corrupted (a digest that does not match, ...)."""

    sentinel = "data loss"


class AbortedError(ContainerdError):
    """The operation was aborted, typically by a concurrency conflict."""

    sentinel = "aborted"


class ConflictError(ContainerdError):
    """The operation conflicts with the current state."""

    sentinel = "conflict"


class NotModifiedError(ContainerdError):
    """The object was not modified."""

    sentinel = "not modified"


class PermissionDeniedError(ContainerdError):
    """The caller may not do this."""

    sentinel = "permission denied"


class ResourceExhaustedError(ContainerdError):
    """A limit was reached (message size, quota, ...)."""

    sentinel = "resource exhausted"


class CanceledError(ContainerdError):
    """The operation was canceled."""

    sentinel = "context canceled"


class DeadlineExceededError(ContainerdError):
    """The deadline passed before the operation finished."""

    sentinel = "context deadline exceeded"


class UnauthenticatedError(ContainerdError):
    """The caller is not authenticated."""

    sentinel = "unauthenticated"


class InternalError(ContainerdError):
    """An internal invariant was broken."""

    sentinel = "internal"


ALL_KINDS: tuple[type[ContainerdError], ...] = (
    UnknownError,
    InvalidArgumentError,
    NotFoundError,
    AlreadyExistsError,
    FailedPreconditionError,
    UnavailableError,
    UnimplementedError,
    OutOfRangeError,
    DataLossError,
    AbortedError,
    ConflictError,
    NotModifiedError,
    PermissionDeniedError,
    ResourceExhaustedError,
    CanceledError,
    DeadlineExceededError,
    UnauthenticatedError,
    InternalError,
)


def is_kind(exc: BaseException, kind: type[ContainerdError]) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is of ``kind``."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, kind):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False
