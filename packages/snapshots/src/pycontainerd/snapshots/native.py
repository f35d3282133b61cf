"""The native snapshotter (``io.containerd.snapshotter.v1.native``): plain directory copies.

Every snapshot is a full copy of its parent in ``<root>/snapshots/<id>``,
mounted with a bind mount. It works on any filesystem and needs no kernel
support beyond bind mounts, at the price of copying each layer.

Importing this module must not import grpc.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from pycontainerd.core.snapshots import Kind
from pycontainerd.core.types import Mount
from pycontainerd.snapshots import fsutil
from pycontainerd.snapshots.base import DirSnapshotter

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.snapshots.storage import Snapshot

__all__ = ["NativeSnapshotter"]


class NativeSnapshotter(DirSnapshotter):
    """Snapshots as full directory copies, mounted with ``rbind``."""

    name = "native"

    def _create(self, path: Path, snap: Snapshot) -> None:
        if snap.parent_ids:
            fsutil.copy_tree(self.snapshot_dir(snap.parent_ids[0]), path)
        else:
            os.mkdir(path, 0o755)

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        flag = "ro" if snap.kind is Kind.VIEW else "rw"
        return [Mount(type="bind", source=str(self.snapshot_dir(snap.id)), options=(flag, "rbind"))]
