"""The btrfs snapshotter (``io.containerd.snapshotter.v1.btrfs``).

Each snapshot is a btrfs subvolume at ``<root>/snapshots/<id>``: a new
snapshot is a subvolume snapshot of its parent (read-only for views), a
snapshot without parent an empty subvolume, and committing marks the
subvolume read-only. Copies are copy-on-write, so a snapshot costs almost
nothing however large its parent. Mounts are ``btrfs`` mounts of the
filesystem's device with ``subvolid=<n>``, as upstream hands them out.

Subvolumes are managed with the ``btrfs`` command (btrfs-progs). The root
must be on btrfs; :func:`check_btrfs` says why not otherwise.

Importing this module must not import grpc.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import FailedPreconditionError
from pycontainerd.core.plugin import SkipPluginError
from pycontainerd.core.snapshots import Kind
from pycontainerd.core.types import Mount
from pycontainerd.snapshots import fsutil
from pycontainerd.snapshots.base import DirSnapshotter

if TYPE_CHECKING:
    from pycontainerd.snapshots.storage import Snapshot

__all__ = ["BtrfsSnapshotter", "check_btrfs", "mount_of"]

#: Inode number of every subvolume's root directory.
SUBVOLUME_INODE: Final = 256


def mount_of(path: str | os.PathLike[str]) -> tuple[str, str, str]:
    """``(mount point, filesystem type, source)`` of the mount holding ``path``."""
    target = os.path.realpath(path)
    best = ("/", "", "")
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4].encode().decode("unicode_escape")
            fstype, source = right.split()[:2]
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best[0]):
                best = (point, fstype, source)
    return best


def check_btrfs(root: str | os.PathLike[str]) -> None:
    """Raise ``SkipPluginError`` unless ``root`` is on btrfs and ``btrfs`` is installed."""
    probe = Path(root)
    while not probe.exists():
        probe = probe.parent
    _, fstype, _ = mount_of(probe)
    if fstype != "btrfs":
        msg = (
            f"path {root} ({fstype or 'unknown'}) must be a btrfs filesystem "
            "to be used with the btrfs snapshotter"
        )
        raise SkipPluginError(msg)
    if shutil.which("btrfs") is None:
        msg = "the btrfs command (btrfs-progs) is not installed"
        raise SkipPluginError(msg)


def _btrfs(*args: str) -> str:
    proc = subprocess.run(
        ["btrfs", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        msg = f"btrfs {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}"
        raise FailedPreconditionError(msg)
    return proc.stdout


def is_subvolume(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is the root of a btrfs subvolume."""
    try:
        return os.lstat(path).st_ino == SUBVOLUME_INODE
    except FileNotFoundError:
        return False


class BtrfsSnapshotter(DirSnapshotter):
    """Snapshots as btrfs subvolumes."""

    name = "btrfs"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        check_btrfs(root)
        super().__init__(root)
        _, _, self.device = mount_of(self.root)
        self._subvol_ids: dict[str, str] = {}

    def _create(self, path: Path, snap: Snapshot) -> None:
        if snap.parent_ids:
            readonly = ("-r",) if snap.kind is Kind.VIEW else ()
            parent = str(self.snapshot_dir(snap.parent_ids[0]))
            _btrfs("subvolume", "snapshot", *readonly, parent, str(path))
        else:
            _btrfs("subvolume", "create", str(path))
            if snap.kind is Kind.VIEW:
                _btrfs("property", "set", "-ts", str(path), "ro", "true")

    def _on_commit(self, sid: str) -> None:
        _btrfs("property", "set", "-ts", str(self.snapshot_dir(sid)), "ro", "true")

    def _delete(self, path: Path) -> None:
        if is_subvolume(path):
            _btrfs("subvolume", "delete", str(path))
        else:
            fsutil.remove_tree(path)

    def _subvol_id(self, sid: str) -> str:
        found = self._subvol_ids.get(sid)
        if found is None:
            found = _btrfs("inspect-internal", "rootid", str(self.snapshot_dir(sid))).strip()
            self._subvol_ids[sid] = found
        return found

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        flag = "ro" if snap.kind is Kind.VIEW else "rw"
        return [
            Mount(
                type="btrfs",
                source=self.device,
                options=(f"subvolid={self._subvol_id(snap.id)}", flag),
            )
        ]
