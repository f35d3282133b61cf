"""Layer tarballs (containerd's ``archive``): the public face of four modules.

* :mod:`.pathres`: resolving entry paths inside the target, as containerd;
* :mod:`.tarread`: reading tar streams as Go's ``archive/tar`` does;
* :mod:`.apply`: applying a layer to a directory or an overlay upper directory;
* :mod:`.diffwrite`: writing the layer between two trees as containerd writes it.

Importing this module must not import grpc.
"""

from __future__ import annotations

from pycontainerd.snapshots.apply import (
    OPAQUE_WHITEOUT,
    WHITEOUT_PREFIX,
    OverlayUpper,
    apply_chunks,
    apply_tar,
)
from pycontainerd.snapshots.diffwrite import write_diff
from pycontainerd.snapshots.tarread import Entry, TarReader

__all__ = [
    "OPAQUE_WHITEOUT",
    "WHITEOUT_PREFIX",
    "Entry",
    "OverlayUpper",
    "TarReader",
    "apply_chunks",
    "apply_tar",
    "write_diff",
]
