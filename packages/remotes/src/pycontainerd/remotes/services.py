"""What the image operations need of a containerd: the ``ImageServices`` contract.

Pull, push, archive import and export are written against this Protocol, not
against a client or a daemon. The client library's ``Client`` satisfies it over
gRPC; the daemon's transfer plugin satisfies it with its in-process stores
(the metadata database's namespaced content store, image store and
snapshotters, the walking differ, the lease manager). Both run the same code,
so a server-side pull stores exactly what a client-side pull stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import contextlib

    from pycontainerd.core import content, images
    from pycontainerd.core.snapshots import Snapshotter
    from pycontainerd.remotes.unpack import Applier

__all__ = ["ImageServices"]


class ImageServices(Protocol):
    """The stores and services an image operation works on, in the current namespace."""

    @property
    def snapshotter(self) -> str:
        """The default snapshotter's name."""
        ...

    def content_store(self) -> content.Store:
        """The content store."""
        ...

    def image_store(self) -> images.Store:
        """The image store."""
        ...

    def snapshot_service(self, snapshotter: str | None = None) -> Snapshotter:
        """The snapshotter ``snapshotter`` (default: :attr:`snapshotter`)."""
        ...

    def diff_service(self) -> Applier:
        """The differ that applies layers."""
        ...

    def with_lease(self) -> contextlib.AbstractAsyncContextManager[str]:
        """Run a block under a lease: the current one, else a new one deleted on exit."""
        ...
