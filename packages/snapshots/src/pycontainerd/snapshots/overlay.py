"""The overlayfs snapshotter (``io.containerd.snapshotter.v1.overlayfs``).

On-disk layout, as upstream: ``<root>/snapshots/<id>/fs`` holds the files a
snapshot adds (the overlay upper directory while it is active) and
``<root>/snapshots/<id>/work`` is overlayfs's work directory (active
snapshots only); ``<root>/metadata.db`` records keys, kinds and parents.

Mounts follow upstream too:

* an active snapshot without parent is a read-write bind mount of its ``fs``;
* a view of a single layer (or of nothing) is a read-only bind mount;
* otherwise an ``overlay`` mount with ``index=off``, the parents' ``fs``
  directories as ``lowerdir`` (nearest first) and, for an active snapshot,
  its own ``fs``/``work`` as ``upperdir``/``workdir``.

The ``lowerdir`` list names absolute paths; :mod:`pycontainerd.snapshots.mount`
shortens it when it would not fit in the kernel's one-page limit, so a chain
of 128 layers mounts.

Importing this module must not import grpc.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pycontainerd.core.plugin import SkipPluginError
from pycontainerd.core.snapshots import Kind
from pycontainerd.core.types import Mount
from pycontainerd.snapshots.base import DirSnapshotter

if TYPE_CHECKING:
    from pycontainerd.snapshots.storage import Snapshot

__all__ = ["OverlaySnapshotter", "check_overlay_support"]


def check_overlay_support(root: str | os.PathLike[str]) -> None:
    """Mount a tiny overlay under ``root`` to see that overlayfs works there.

    Raises:
        SkipPluginError: it does not (no kernel support, no privilege, or a
            filesystem that cannot be an upper directory, such as overlayfs).
    """
    from pycontainerd.snapshots import mount as mountlib

    base = Path(root)
    base.mkdir(parents=True, exist_ok=True)
    probe = Path(tempfile.mkdtemp(prefix="overlayfs-check-", dir=base))
    try:
        for name in ("lower", "upper", "work", "merged"):
            (probe / name).mkdir()
        m = Mount(
            type="overlay",
            source="overlay",
            options=(
                "index=off",
                f"lowerdir={probe / 'lower'}",
                f"upperdir={probe / 'upper'}",
                f"workdir={probe / 'work'}",
            ),
        )
        try:
            mountlib.mount(m, probe / "merged")
        except OSError as exc:
            msg = f"overlayfs cannot be used on {base}: {exc.strerror}"
            raise SkipPluginError(msg) from exc
        mountlib.unmount(probe / "merged")
    finally:
        shutil.rmtree(probe, ignore_errors=True)


class OverlaySnapshotter(DirSnapshotter):
    """Snapshots as overlayfs layers."""

    name = "overlayfs"

    def _data_dir(self, sid: str) -> Path:
        return self.snapshot_dir(sid) / "fs"

    def _create(self, path: Path, snap: Snapshot) -> None:
        os.mkdir(path, 0o700)
        os.mkdir(path / "fs", 0o755)
        if snap.kind is Kind.ACTIVE:
            os.mkdir(path / "work", 0o711)

    def _fs(self, sid: str) -> str:
        """``str(self._data_dir(sid))`` without building a path object per layer."""
        return f"{self._snapshots_path}/{sid}/fs"

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        fs = self._fs(snap.id)
        if not snap.parent_ids:
            flag = "ro" if snap.kind is Kind.VIEW else "rw"
            return [Mount(type="bind", source=fs, options=(flag, "rbind"))]
        lowers = [self._fs(pid) for pid in snap.parent_ids]
        if snap.kind is Kind.VIEW:
            if len(lowers) == 1:
                return [Mount(type="bind", source=lowers[0], options=("ro", "rbind"))]
            return [
                Mount(
                    type="overlay",
                    source="overlay",
                    options=("index=off", "lowerdir=" + ":".join(lowers)),
                )
            ]
        work = f"{self._snapshots_path}/{snap.id}/work"
        return [
            Mount(
                type="overlay",
                source="overlay",
                options=(
                    "index=off",
                    f"workdir={work}",
                    f"upperdir={fs}",
                    "lowerdir=" + ":".join(lowers),
                ),
            )
        ]
