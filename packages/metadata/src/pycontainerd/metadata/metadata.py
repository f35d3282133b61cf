"""The metadata plugin's instance: the database plus the stores built on it.

``ic.get_single(PluginType.METADATA)`` returns a :class:`Metadata`; other
plugins take their namespaced views from it, e.g. the Content service serves
``metadata.content_store()`` (a ``pycontainerd.core.content.Store``), never
the raw backend.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.core.snapshots import Snapshotter
from pycontainerd.metadata.containers import ContainerStore
from pycontainerd.metadata.content import SHARED, MetadataContentStore
from pycontainerd.metadata.db import MetadataDB
from pycontainerd.metadata.images import ImageStore
from pycontainerd.metadata.leases import LeaseStore
from pycontainerd.metadata.namespaces import NamespaceStore
from pycontainerd.metadata.sandboxes import SandboxStore
from pycontainerd.metadata.snapshotter import NamespacedSnapshotter

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from pycontainerd.core.content import Store


class Metadata:
    """The metadata database and its namespaced stores, created once per daemon.

    Args:
        path: the database file (``<root>/io.containerd.metadata.v1.sqlite/meta.db``).
        content: the backend content store holding the bytes.
        snapshotters: backend snapshotters by name (kept for the snapshot views).
        policy: content sharing policy, ``shared`` or ``isolated``.
    """

    def __init__(
        self,
        path: Path,
        content: Store,
        *,
        snapshotters: Mapping[str, object] | None = None,
        policy: str = SHARED,
    ) -> None:
        self.db = MetadataDB.open(path)
        self.content_backend = content
        self.policy = policy
        self.snapshotters = dict(snapshotters or {})
        self._snapshotters: dict[str, NamespacedSnapshotter] = {}
        self._content = MetadataContentStore(self.db, content, policy=policy)
        self._namespaces = NamespaceStore(self.db)
        self._images = ImageStore(self.db)
        self._containers = ContainerStore(self.db)
        self._leases = LeaseStore(self.db)
        self._sandboxes = SandboxStore(self.db)

    def content_store(self) -> MetadataContentStore:
        """The namespaced content store (what the Content service serves)."""
        return self._content

    def snapshotter(self, name: str) -> NamespacedSnapshotter:
        """The namespaced view of backend snapshotter ``name``, one per name.

        Implements :class:`pycontainerd.core.snapshots.SnapshotterProvider`.

        Raises:
            NotFoundError: no snapshotter ``name`` was loaded.
        """
        view = self._snapshotters.get(name)
        if view is None:
            backend = self.snapshotters.get(name)
            if not isinstance(backend, Snapshotter):
                msg = f"snapshotter {name!r} is not loaded"
                raise NotFoundError(msg)
            view = self._snapshotters[name] = NamespacedSnapshotter(self.db, name, backend)
        return view

    def namespace_store(self) -> NamespaceStore:
        """Namespaces and their labels."""
        return self._namespaces

    def image_store(self) -> ImageStore:
        """Images of the current namespace."""
        return self._images

    def container_store(self) -> ContainerStore:
        """Containers of the current namespace."""
        return self._containers

    def lease_store(self) -> LeaseStore:
        """Leases of the current namespace."""
        return self._leases

    def sandbox_store(self) -> SandboxStore:
        """Sandboxes of the current namespace (the ``local`` sandbox store)."""
        return self._sandboxes

    async def aclose(self) -> None:
        """Close the database (the daemon calls this at shutdown)."""
        await self.db.aclose()
