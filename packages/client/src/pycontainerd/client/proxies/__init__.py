"""Proxies: the core contracts implemented over containerd's gRPC API.

Each ``Remote*`` class satisfies the same Protocol as the daemon-side
implementation (``pycontainerd.core.content.Store``,
``pycontainerd.core.snapshots.Snapshotter``...), so the conformance suites
run against local and remote stores alike (containerd's ``core/*/proxy``).
They are obtained from a :class:`pycontainerd.client.Client`, which supplies
the channel and the namespace/lease headers (:class:`Connection`, so that no
proxy imports the client that builds it); failed calls raise
``pycontainerd.core.errdefs`` kinds. A proxy of one service derives from
:class:`Proxy`, which holds its stub and the options of each call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    import grpc.aio

StubT = TypeVar("StubT")


class Connection(Protocol):
    """What a proxy needs of its client (:class:`pycontainerd.client.Client` has it)."""

    timeout: float | None

    @property
    def channel(self) -> grpc.aio.Channel:
        """The gRPC channel."""
        ...

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Headers for one call: the namespace and, if any, the lease."""
        ...


class Proxy(Generic[StubT]):
    """A proxy of one gRPC service: its stub on the client's channel, and per-call options.

    A subclass names its stub class in ``new_stub`` (``<service>_pb2_grpc.<Service>Stub``)
    and passes ``**self._opts()`` to each call.
    """

    new_stub: Callable[[grpc.aio.Channel], StubT]
    """Makes the stub from the channel (the generated stub class)."""

    def __init__(self, client: Connection) -> None:
        self._client = client
        self._stub = self.new_stub(client.channel)

    def _opts(self) -> dict[str, Any]:
        """A call's keyword arguments: the namespace and lease headers, and the timeout."""
        return {"metadata": self._client.metadata(), "timeout": self._client.timeout}
