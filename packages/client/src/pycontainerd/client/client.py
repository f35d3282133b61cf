"""``Client``: one connection to a containerd (or pycontainerd) daemon.

Like containerd's Go client, a ``Client`` owns a gRPC channel to the daemon's
unix socket and hands out proxies that implement the core contracts over it
(``content_store()``, ``snapshot_service()``, ``image_store()``...). Every
call carries the ``containerd-namespace`` header: the namespace set with
``pycontainerd.core.namespaces.with_namespace`` when there is one, otherwise
the client's own. The ``containerd-lease`` header is sent the same way
(``with_lease`` or the client's ``lease``).

The channel is created lazily on first use, inside the running event loop.
``async with Client(...) as client`` also waits for the daemon to answer
(``connect_timeout``), so an unreachable socket fails fast with
``failed to dial "<address>": context deadline exceeded``.

Example:
    >>> async def main() -> None:  # doctest: +SKIP
    ...     async with Client("/run/containerd/containerd.sock", "default") as client:
    ...         print(await client.version())
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final, Self

import grpc

from pycontainerd.client import address as addresses
from pycontainerd.client._errors import rpc_errors
from pycontainerd.client.facade import ClientFacade
from pycontainerd.client.proxies import call_options
from pycontainerd.config import client as client_config
from pycontainerd.config.errors import ConfigError
from pycontainerd.core import namespaces
from pycontainerd.core.closing import AsyncClosing
from pycontainerd.core.errdefs import (
    DeadlineExceededError,
    InvalidArgumentError,
    UnavailableError,
)
from pycontainerd.core.leases import EXPIRE_LABEL

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from pycontainerd.client import transfer
    from pycontainerd.client.proxies.containers import RemoteContainerStore
    from pycontainerd.client.proxies.content import RemoteContentStore
    from pycontainerd.client.proxies.diff import RemoteDiff
    from pycontainerd.client.proxies.events import RemoteEventService
    from pycontainerd.client.proxies.images import RemoteImageStore
    from pycontainerd.client.proxies.introspection import RemoteIntrospection, ServerInfo
    from pycontainerd.client.proxies.leases import RemoteLeaseManager
    from pycontainerd.client.proxies.namespaces import RemoteNamespaceStore
    from pycontainerd.client.proxies.snapshots import RemoteSnapshotter

DEFAULT_SNAPSHOTTER: Final = "overlayfs"
"""containerd's default snapshotter on Linux."""
SNAPSHOTTER_ENV: Final = "CONTAINERD_SNAPSHOTTER"
MAX_MESSAGE_SIZE: Final = 16 << 20
"""The Go client's send/receive limit (16 MiB)."""
DEFAULT_LEASE_EXPIRY: Final = timedelta(hours=24)


@dataclass(frozen=True, slots=True, kw_only=True)
class Version:
    """The daemon's version (``Version.Version``).

    Attributes:
        version: e.g. ``1.6.20~ds1``.
        revision: the build's source revision.
    """

    version: str
    revision: str


def lease_labels(
    expire: timedelta | None, labels: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``labels`` and, unless ``expire`` is ``None``, ``containerd.io/gc.expire`` that far ahead."""
    all_labels = dict(labels or {})
    if expire is not None:
        until = datetime.now(UTC) + expire
        all_labels[EXPIRE_LABEL] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
    return all_labels


def generate_lease_id() -> str:
    """A lease id like containerd's: ``<nanoseconds of this second>-<4 base64url chars>``."""
    nanos = time.time_ns() % 1_000_000_000
    suffix = base64.urlsafe_b64encode(os.urandom(3)).decode()
    return f"{nanos}-{suffix}"


class Client(ClientFacade, AsyncClosing):
    """A connection to a daemon; see the module docstring.

    The high-level methods (``pull``, ``new_container``, ``subscribe``, ...)
    come from :class:`~pycontainerd.client.facade.ClientFacade`.

    Args:
        address: socket path, ``unix://`` URL or ``tcp://host:port``
            (:mod:`pycontainerd.client.address`); default from
            ``CONTAINERD_ADDRESS`` or the platform default
            (``pycontainerd.config.client``).
        namespace: default namespace; from ``CONTAINERD_NAMESPACE`` or ``default``.
        timeout: deadline in seconds for each unary call (``None``: none).
        connect_timeout: seconds ``connect()`` waits for the daemon.
        lease: a lease id sent with every call (``containerd-lease``).
        snapshotter: the default snapshotter name (``CONTAINERD_SNAPSHOTTER``
            or ``overlayfs``).
        tls: TLS for a ``tcp://`` address (default: ``CONTAINERD_TLS_*``;
            none means plaintext TCP).

    Raises:
        InvalidArgumentError: an empty or unsupported address, an empty namespace.
    """

    def __init__(
        self,
        address: str | None = None,
        namespace: str | None = None,
        *,
        timeout: float | None = None,
        connect_timeout: float | str | None = None,
        lease: str | None = None,
        snapshotter: str | None = None,
        tls: addresses.TLSConfig | None = None,
    ) -> None:
        self.target = addresses.resolve(address)
        self.address = str(self.target)
        self.tls = (tls or addresses.TLSConfig.from_env()) if self.target.is_tcp else None
        try:
            self.namespace = client_config.resolve_namespace(namespace)
            self.connect_timeout = client_config.resolve_connect_timeout(connect_timeout)
        except ConfigError as exc:
            raise InvalidArgumentError(exc.message) from exc
        self.timeout = timeout or None
        self.lease = lease or None
        self.snapshotter = snapshotter or os.environ.get(SNAPSHOTTER_ENV) or DEFAULT_SNAPSHOTTER
        self._channel: grpc.aio.Channel | None = None

    # -- connection ---------------------------------------------------------

    @property
    def channel(self) -> grpc.aio.Channel:
        """The gRPC channel, created on first use (call from inside the event loop)."""
        if self._channel is None:
            target, options, credentials = self.channel_arguments()
            if credentials is None:
                self._channel = grpc.aio.insecure_channel(target, options=options)
            else:
                self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        return self._channel

    def channel_arguments(
        self,
    ) -> tuple[str, list[tuple[str, str | int]], grpc.ChannelCredentials | None]:
        """Target, options and TLS credentials (``None``: plaintext) of a channel to the daemon.

        What :attr:`channel` dials with; the sync twin dials a blocking channel
        with the same.
        """
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
            ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ]
        target = self.target.grpc_target()
        if not self.target.is_tcp:
            options.append(("grpc.default_authority", "localhost"))
            return target, options, None
        if self.tls is None:
            return target, options, None
        ca, key, cert = self.tls.read()
        if self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )
        return target, options, credentials

    async def connect(self) -> None:
        """Wait until the daemon's socket answers, at most ``connect_timeout`` seconds.

        Over TLS, a handshake the daemon or this client refuses (a wrong CA,
        a missing client certificate) fails at once with the reason.

        Raises:
            DeadlineExceededError: ``failed to dial "<address>"``.
            UnavailableError: ``failed to dial "<address>": tls: ...``.
        """
        channel = self.channel
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.tls is None:
                    await channel.channel_ready()
                    return
                state = channel.get_state(try_to_connect=True)
                while state is not grpc.ChannelConnectivity.READY:
                    if state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
                        await self._raise_tls_failure()
                    await channel.wait_for_state_change(state)
                    state = channel.get_state(try_to_connect=True)
        except TimeoutError:
            msg = f'failed to dial "{self.address}"'
            raise DeadlineExceededError(msg) from None

    async def _raise_tls_failure(self) -> None:
        """Raise the reason a TLS connection fails, if the handshake names one."""
        assert self.tls is not None  # noqa: S101 - only called for TLS
        reason = await asyncio.to_thread(addresses.diagnose_tls, self.target, self.tls)
        if reason:
            msg = f'failed to dial "{self.address}": {reason}'
            raise UnavailableError(msg)

    async def close(self) -> None:
        """Close the channel; the client may be used again (a new channel is made)."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    aclose = close  # what leaving ``async with`` awaits (AsyncClosing)

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Headers for one call: the current namespace and, if any, the lease."""
        md = [(namespaces.GRPC_HEADER, namespaces.namespace() or self.namespace)]
        lease = namespaces.lease() or self.lease
        if lease:
            md.append((namespaces.LEASE_HEADER, lease))
        return tuple(md)

    # -- proxies --------------------------------------------------------------

    def content_store(self) -> RemoteContentStore:
        """The content store (``content.Store`` over the Content service)."""
        from pycontainerd.client.proxies.content import RemoteContentStore

        return RemoteContentStore(self)

    def snapshot_service(self, snapshotter: str | None = None) -> RemoteSnapshotter:
        """The snapshotter ``snapshotter`` (default: the client's) over the Snapshots service."""
        from pycontainerd.client.proxies.snapshots import RemoteSnapshotter

        return RemoteSnapshotter(self, snapshotter or self.snapshotter)

    def image_store(self) -> RemoteImageStore:
        """Image records (``images.Store`` over the Images service)."""
        from pycontainerd.client.proxies.images import RemoteImageStore

        return RemoteImageStore(self)

    def container_store(self) -> RemoteContainerStore:
        """Container records (``containers.Store`` over the Containers service)."""
        from pycontainerd.client.proxies.containers import RemoteContainerStore

        return RemoteContainerStore(self)

    def lease_manager(self) -> RemoteLeaseManager:
        """Leases (``leases.Manager`` over the Leases service)."""
        from pycontainerd.client.proxies.leases import RemoteLeaseManager

        return RemoteLeaseManager(self)

    def namespace_store(self) -> RemoteNamespaceStore:
        """Namespaces (the Namespaces service)."""
        from pycontainerd.client.proxies.namespaces import RemoteNamespaceStore

        return RemoteNamespaceStore(self)

    def event_service(self) -> RemoteEventService:
        """Publish, forward and subscribe (the Events service)."""
        from pycontainerd.client.proxies.events import RemoteEventService

        return RemoteEventService(self)

    def introspection(self) -> RemoteIntrospection:
        """Plugins and server information (the Introspection service)."""
        from pycontainerd.client.proxies.introspection import RemoteIntrospection

        return RemoteIntrospection(self)

    def diff_service(self) -> RemoteDiff:
        """Apply and create layer diffs (the Diff service)."""
        from pycontainerd.client.proxies.diff import RemoteDiff

        return RemoteDiff(self)

    async def transfer(
        self,
        source: transfer.Endpoint,
        destination: transfer.Endpoint,
        *,
        progress: Callable[[transfer.Progress], None] | None = None,
    ) -> None:
        """Have the daemon move ``source`` to ``destination`` (``pycontainerd.client.transfer``)."""
        from pycontainerd.client.transfer import transfer as run_transfer

        await run_transfer(self, source, destination, progress=progress)

    # -- small services ---------------------------------------------------------

    async def version(self) -> Version:
        """The daemon's version and revision."""
        from google.protobuf import empty_pb2

        from pycontainerd.api.services.version.v1 import version_pb2_grpc

        stub = version_pb2_grpc.VersionStub(self.channel)
        with rpc_errors():
            resp = await stub.Version(empty_pb2.Empty(), **call_options(self))
        return Version(version=resp.version, revision=resp.revision)

    async def server(self) -> ServerInfo:
        """The daemon's UUID (and, from 1.7, pid, pid namespace and deprecations)."""
        return await self.introspection().server()

    # -- leases -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def with_lease(
        self,
        *,
        expire: timedelta | None = DEFAULT_LEASE_EXPIRY,
        labels: Mapping[str, str] | None = None,
    ) -> AsyncIterator[str]:
        """Run the block under a new lease, deleted on exit (containerd's ``WithLease``).

        Resources created in the block (content, ingests, snapshots) stay
        referenced until the lease is deleted. If a lease is already current,
        it is reused and not deleted.
        """
        current = namespaces.lease() or self.lease
        if current:
            yield current
            return
        manager = self.lease_manager()
        lease = await manager.create(generate_lease_id(), labels=lease_labels(expire, labels))
        try:
            with namespaces.with_lease(lease.id):
                yield lease.id
        finally:
            await manager.delete(lease.id)
