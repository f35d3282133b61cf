"""Proxies: the core contracts implemented over containerd's gRPC API.

Each ``Remote*`` class satisfies the same Protocol as the daemon-side
implementation (``pycontainerd.core.content.Store``,
``pycontainerd.core.snapshots.Snapshotter``...), so the conformance suites
run against local and remote stores alike (containerd's ``core/*/proxy``).
They are obtained from a :class:`pycontainerd.client.Client`, which supplies
the channel and the namespace/lease headers (:class:`Connection`, so that no
proxy imports the client that builds it); failed calls raise
``pycontainerd.core.errdefs`` kinds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import grpc.aio


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
