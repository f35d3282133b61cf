"""The call's namespace and lease, for gRPC servicers.

containerd clients send the namespace in the ``containerd-namespace`` metadata
header and the lease in ``containerd-lease``; the stores read both from
:mod:`pycontainerd.core.namespaces` context variables. :func:`request_scope`
makes a call's headers current for a block of a unary handler.

Streaming handlers are async generators, and a context variable must not stay
set across their ``yield``: when the client goes away while the generator is
suspended there, grpc drops it and the event loop closes it later from another
task, whose context cannot reset the variable ("Token ... was created in a
different Context", logged as a task exception nobody retrieved). So a
streaming handler takes a :class:`CallScope` and makes it current around each
step that does not yield (``with scope.current():``), or iterates a store
through :meth:`CallScope.iterate`.

This module is an edge: it imports grpc only for annotations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pycontainerd.core import namespaces

if TYPE_CHECKING:
    import contextlib
    from collections.abc import AsyncIterator, Callable, Iterable

    import grpc.aio

__all__ = ["CallScope", "header", "lease_of", "metadata_value", "namespace_of", "request_scope"]

T = TypeVar("T")


def header(context: grpc.aio.ServicerContext[Any, Any], key: str) -> str | None:
    """The first non-empty value of metadata ``key`` on the call."""
    return metadata_value(context.invocation_metadata() or (), key)


def metadata_value(metadata: Iterable[tuple[str, str | bytes]], key: str) -> str | None:
    """The first non-empty string value of ``key`` in ``metadata`` (also for fast paths)."""
    for k, value in metadata:
        if k == key and isinstance(value, str) and value:
            return value
    return None


def _scope_headers(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str | None, str | None]:
    """The namespace and lease headers in one pass over the metadata."""
    ns: str | None = None
    lease: str | None = None
    for k, value in context.invocation_metadata() or ():
        if k == namespaces.GRPC_HEADER:
            if ns is None and isinstance(value, str) and value:
                ns = value
        elif k == namespaces.LEASE_HEADER and lease is None and isinstance(value, str) and value:
            lease = value
    return ns, lease


def namespace_of(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The call's ``containerd-namespace`` header (not validated: the stores do that)."""
    return header(context, namespaces.GRPC_HEADER)


def lease_of(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The call's ``containerd-lease`` header."""
    return header(context, namespaces.LEASE_HEADER)


@dataclass(frozen=True, slots=True)
class CallScope:
    """A call's namespace and lease, read once, made current block by block."""

    namespace: str | None
    lease: str | None

    @classmethod
    def of(cls, context: grpc.aio.ServicerContext[Any, Any]) -> CallScope:
        """The scope of the call behind ``context``."""
        return cls(*_scope_headers(context))

    def current(self) -> contextlib.AbstractContextManager[None]:
        """Make the namespace and lease current in the block (no ``yield`` inside it)."""
        return namespaces.with_scope(self.namespace, self.lease)

    async def iterate(self, iterator: AsyncIterator[T]) -> AsyncIterator[T]:
        """Items of ``iterator``, each produced with the scope current.

        The scope is current only while ``iterator`` runs, never while the
        caller holds an item, so the handler may ``yield`` it. Closing this
        generator closes ``iterator``.
        """
        try:
            while True:
                with self.current():
                    try:
                        item = await anext(iterator)
                    except StopAsyncIteration:
                        return
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with self.current():
                    await aclose()


def request_scope(
    context: grpc.aio.ServicerContext[Any, Any],
) -> contextlib.AbstractContextManager[None]:
    """Make the call's namespace and lease current in a ``with`` block (unary handlers)."""
    return namespaces.with_scope(*_scope_headers(context))


LAST_WITH_STATUS_ATTR: Final = "h2grpc_last_with_status"
"""The attribute :func:`last_message_with_status` sets on a behaviour."""

_F = TypeVar("_F", bound="Callable[..., Any]")


def last_message_with_status(behavior: _F) -> _F:
    """Declare that a server-streaming behaviour's last message may travel with the status.

    For an async generator behaviour (a servicer's server-streaming method).
    The daemon's server (:mod:`pycontainerd.api.h2grpc`) then sends each
    message when the next one is yielded and the last one together with the
    OK status, in one write when the windows allow:
    for a stream that is usually one message long (the Content service's
    ``Read`` of 32 KiB), that saves a write and a frame per call, as a unary
    answer does. The bytes on the wire are a server stream's either way, and
    a stream with no message still answers none. grpcio ignores the marker
    and sends each message as it comes. A message already yielded is still
    sent when the generator then fails, before the error status.
    """
    setattr(behavior, LAST_WITH_STATUS_ATTR, True)
    return behavior
