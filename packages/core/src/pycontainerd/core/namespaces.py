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

import contextvars
from typing import TYPE_CHECKING, Final

from pycontainerd.core import identifiers
from pycontainerd.core.errdefs import FailedPreconditionError, InvalidArgumentError

if TYPE_CHECKING:
    import contextlib

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


class _Set:
    """``with``-block that sets a context variable and resets it on exit.

    A plain class: every RPC enters one or two of these, and a generator-based
    context manager costs several times more per use.
    """

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[str | None], value: str | None) -> None:
        self._var = var
        self._value = value or None
        self._token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> str | None:
        self._token = self._var.set(self._value)
        return self._value

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            self._var.reset(self._token)
            self._token = None


def with_namespace(ns: str | None) -> contextlib.AbstractContextManager[str | None]:
    """Make ``ns`` the current namespace inside the ``with`` block.

    The value is not validated here, as containerd's ``WithNamespace`` does not
    validate; ``namespace_required`` does. ``None`` or ``""`` clears it.
    """
    return _Set(_namespace, ns)


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
    if not namespace_is_valid(ns):
        try:
            identifiers.validate(ns)
        except InvalidArgumentError as exc:
            msg = f"namespace validation: {exc.message}"
            raise InvalidArgumentError(msg) from exc
    return ns


def namespace_is_valid(ns: str) -> bool:
    """Whether ``ns`` is a valid namespace name; valid names are remembered (hot path)."""
    if ns in _valid:
        return True
    try:
        identifiers.validate(ns)
    except InvalidArgumentError:
        return False
    if len(_valid) >= 1024:
        _valid.clear()
    _valid.add(ns)
    return True


_valid: set[str] = set()
"""Namespaces already validated (every call of a busy client names the same few)."""


def with_lease(lease_id: str | None) -> contextlib.AbstractContextManager[str | None]:
    """Make ``lease_id`` the current lease inside the ``with`` block.

    Resources created while a lease is current are referenced by it, so the
    garbage collector keeps them until the lease is deleted or expires.
    ``None`` or ``""`` clears it.
    """
    return _Set(_lease, lease_id)


def with_scope(ns: str | None, lease_id: str | None) -> contextlib.AbstractContextManager[None]:
    """Make both the namespace and the lease current inside the ``with`` block."""
    return _Scope(ns, lease_id)


class _Scope:
    __slots__ = ("_lease", "_ns", "_tokens")

    def __init__(self, ns: str | None, lease_id: str | None) -> None:
        self._ns = ns or None
        self._lease = lease_id or None
        self._tokens: tuple[contextvars.Token[str | None], contextvars.Token[str | None]] | None = (
            None
        )

    def __enter__(self) -> None:
        self._tokens = (_namespace.set(self._ns), _lease.set(self._lease))

    def __exit__(self, *exc: object) -> None:
        if self._tokens is not None:
            ns_token, lease_token = self._tokens
            _lease.reset(lease_token)
            _namespace.reset(ns_token)
            self._tokens = None


def lease() -> str | None:
    """The current lease id, or ``None``."""
    return _lease.get()
