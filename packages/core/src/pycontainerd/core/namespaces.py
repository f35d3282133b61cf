"""The current namespace (and lease) of a request, carried in a context variable.

containerd keeps the namespace in Go's ``context.Context``; its gRPC and
ttrpc interceptors copy it from request metadata, and every store looks it up
with ``NamespaceRequired``. Here the same role is played by ``contextvars``:
a server edge wraps the handler in ``with with_namespace(ns):`` and the code
below it calls ``namespace_required()``. Because asyncio copies the context
into each task, a namespace set in a handler is seen by the tasks it starts
and by nobody else.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING, Final

from pycontainerd.core import identifiers
from pycontainerd.core.errdefs import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Iterator

DEFAULT_NAMESPACE: Final = "default"
#: Environment variable clients read for their namespace (ctr ``-n``).
NAMESPACE_ENV: Final = "CONTAINERD_NAMESPACE"
#: gRPC metadata key carrying the namespace (first value wins).
GRPC_HEADER: Final = "containerd-namespace"
#: ttrpc metadata key carrying the namespace (differs from the gRPC one).
TTRPC_HEADER: Final = "containerd-namespace-ttrpc"
#: gRPC metadata key carrying the lease id.
LEASE_HEADER: Final = "containerd-lease"

NAMESPACE_REQUIRED: Final = "namespace is required"

_namespace: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pycontainerd_namespace", default=None
)
_lease: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pycontainerd_lease", default=None
)


@contextlib.contextmanager
def with_namespace(ns: str | None) -> Iterator[str | None]:
    """Make ``ns`` the current namespace inside the ``with`` block.

    The value is not validated here, as containerd's ``WithNamespace`` does not
    validate; ``namespace_required`` does. ``None`` or ``""`` clears it.
    """
    token = _namespace.set(ns or None)
    try:
        yield ns or None
    finally:
        _namespace.reset(token)


def namespace() -> str | None:
    """The current namespace, or ``None`` when none is set."""
    return _namespace.get()


def namespace_required() -> str:
    """The current namespace, validated.

    Raises:
        FailedPreconditionError: no namespace is set (``namespace is required``).
        InvalidArgumentError: it is not a valid identifier
            (``namespace validation: identifier ...``).
    """
    ns = _namespace.get()
    if not ns:
        raise FailedPreconditionError(NAMESPACE_REQUIRED)
    try:
        identifiers.validate(ns)
    except InvalidArgumentError as exc:
        msg = f"namespace validation: {exc.message}"
        raise InvalidArgumentError(msg) from exc
    return ns


@contextlib.contextmanager
def with_lease(lease_id: str | None) -> Iterator[str | None]:
    """Make ``lease_id`` the current lease inside the ``with`` block.

    Resources created while a lease is current are referenced by it, so the
    garbage collector keeps them until the lease is deleted or expires.
    ``None`` or ``""`` clears it.
    """
    token = _lease.set(lease_id or None)
    try:
        yield lease_id or None
    finally:
        _lease.reset(token)


def lease() -> str | None:
    """The current lease id, or ``None``."""
    return _lease.get()
