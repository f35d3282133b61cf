"""Proxies: the core contracts implemented over containerd's gRPC API.

Each ``Remote*`` class satisfies the same Protocol as the daemon-side
implementation (``pycontainerd.core.content.Store``,
``pycontainerd.core.snapshots.Snapshotter``...), so the conformance suites
run against local and remote stores alike (containerd's ``core/*/proxy``).
They are obtained from a :class:`pycontainerd.client.Client`, which supplies
the channel and the namespace/lease headers (:class:`Connection`, so that no
proxy imports the client that builds it); the modules built on the proxies
(containers, tasks, objects, the facade, install) take a :class:`Services`,
the client as far as they use it. Failed calls raise
``pycontainerd.core.errdefs`` kinds. A proxy of one service derives from
:class:`Proxy`, which holds its stub and the options of each call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pycontainerd.client._errors import rpc_errors

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from contextlib import AbstractAsyncContextManager
    from datetime import timedelta

    import grpc.aio

    from pycontainerd.client.proxies.containers import RemoteContainerStore
    from pycontainerd.client.proxies.content import RemoteContentStore
    from pycontainerd.client.proxies.diff import RemoteDiff
    from pycontainerd.client.proxies.events import RemoteEventService
    from pycontainerd.client.proxies.images import RemoteImageStore
    from pycontainerd.client.proxies.introspection import RemoteIntrospection
    from pycontainerd.client.proxies.leases import RemoteLeaseManager
    from pycontainerd.client.proxies.snapshots import RemoteSnapshotter

StubT = TypeVar("StubT")
ReqT = TypeVar("ReqT")
RespT = TypeVar("RespT")


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


class Services(Connection, Protocol):
    """The proxies a client hands out (:class:`pycontainerd.client.Client` has them).

    What the modules built on the proxies need of the client, so that none of
    them imports the class that composes them.
    """

    snapshotter: str
    """The default snapshotter's name."""

    def content_store(self) -> RemoteContentStore:
        """The content store."""
        ...

    def snapshot_service(self, snapshotter: str | None = None) -> RemoteSnapshotter:
        """The snapshotter ``snapshotter`` (default: :attr:`snapshotter`)."""
        ...

    def image_store(self) -> RemoteImageStore:
        """Image records."""
        ...

    def container_store(self) -> RemoteContainerStore:
        """Container records."""
        ...

    def lease_manager(self) -> RemoteLeaseManager:
        """Leases."""
        ...

    def event_service(self) -> RemoteEventService:
        """Publish, forward and subscribe."""
        ...

    def introspection(self) -> RemoteIntrospection:
        """Plugins and server information."""
        ...

    def diff_service(self) -> RemoteDiff:
        """Apply and create layer diffs."""
        ...

    def with_lease(
        self, *, expire: timedelta | None = ..., labels: Mapping[str, str] | None = None
    ) -> AbstractAsyncContextManager[str]:
        """Run a block under a new lease (reusing the current one, if any)."""
        ...


class Proxy(Generic[StubT]):
    """A proxy of one gRPC service: its stub on the client's channel, and per-call options.

    A subclass names its stub class in ``new_stub`` (``<service>_pb2_grpc.<Service>Stub``)
    and makes unary calls with :meth:`_call` (streams take ``**self._opts()``).
    """

    new_stub: Callable[[grpc.aio.Channel], StubT]
    """Makes the stub from the channel (the generated stub class)."""

    def __init__(self, client: Connection) -> None:
        self._client = client
        self._stub = self.new_stub(client.channel)

    def _opts(self) -> dict[str, Any]:
        """A call's keyword arguments: the namespace and lease headers, and the timeout."""
        return call_options(self._client)

    async def _call(
        self, method: grpc.aio.UnaryUnaryMultiCallable[ReqT, RespT], request: ReqT
    ) -> RespT:
        """One unary call with the call's options; a failure raises its errdefs kind."""
        with rpc_errors():
            return await method(request, **self._opts())


def call_options(client: Connection) -> dict[str, Any]:
    """The keyword arguments of one unary call: ``metadata`` (namespace, lease) and ``timeout``."""
    return {"metadata": client.metadata(), "timeout": client.timeout}
