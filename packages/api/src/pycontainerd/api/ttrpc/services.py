"""Describing ttrpc services: call context, handlers and typed service specs.

There is no ttrpc stub generator for Python, so a service is declared by a
:class:`ServiceSpec`: its full name and, per method, the request and response
message classes. The server decodes requests and checks responses against it;
:class:`~pycontainerd.api.ttrpc.client.ServiceClient` does the same on the
calling side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from google.protobuf import message

from pycontainerd.api.ttrpc import _wire
from pycontainerd.core.errdefs import UnimplementedError

__all__ = ["CallContext", "Handler", "ServiceSpec"]


@dataclass(slots=True)
class CallContext:
    """What a handler knows about the call it serves.

    Attributes:
        service: the service name the client asked for.
        method: the method name.
        metadata: request metadata; every key maps to all its values in order.
        deadline: the call's deadline on the event loop's clock
            (``loop.time()``), or None when the client set no timeout.
    """

    service: str
    method: str
    metadata: dict[str, list[str]] = field(default_factory=dict)
    deadline: float | None = None

    @property
    def namespace(self) -> str | None:
        """The containerd namespace of the call (metadata ``containerd-namespace-ttrpc``)."""
        values = self.metadata.get(_wire.NAMESPACE_KEY)
        return values[0] if values else None

    def time_remaining(self) -> float | None:
        """Seconds until the deadline (never negative), or None without one."""
        if self.deadline is None:
            return None
        return max(self.deadline - asyncio.get_running_loop().time(), 0.0)


Handler: TypeAlias = Callable[[CallContext, bytes], Awaitable[message.Message | bytes]]
"""A method handler: gets the call context and the marshalled request, returns
the response message (or its marshalled bytes)."""


@dataclass(frozen=True)
class ServiceSpec:
    """A ttrpc service: its full name and each method's message classes.

    Example:
        >>> TASK = ServiceSpec("containerd.task.v2.Task", {  # doctest: +SKIP
        ...     "State": (shim_pb2.StateRequest, shim_pb2.StateResponse),
        ...     "Connect": (shim_pb2.ConnectRequest, shim_pb2.ConnectResponse),
        ... })
    """

    name: str
    methods: Mapping[str, tuple[type[message.Message], type[message.Message]]]

    def types(self, method: str) -> tuple[type[message.Message], type[message.Message]]:
        """The (request, response) classes of ``method``.

        Raises:
            UnimplementedError: the service has no such method.
        """
        try:
            return self.methods[method]
        except KeyError:
            msg = f"method {method} of service {self.name}"
            raise UnimplementedError(msg) from None
