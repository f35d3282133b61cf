"""What every directory-based snapshotter shares: metadata, directory life cycle, walk.

A concrete snapshotter (overlayfs, native, btrfs) says how to build a
snapshot's directory, how to mount it and how to delete it; this base class
does the rest the same way for all of them:

* a new snapshot is built under ``snapshots/new-<random>`` and renamed to
  ``snapshots/<id>`` inside the metadata transaction, so a crash leaves at
  most an orphan directory, never a half-built snapshot under a live id;
* a removed snapshot is renamed to ``snapshots/rm-<id>`` inside the
  transaction and deleted after it commits (or later by :meth:`cleanup`);
* :meth:`cleanup` deletes every directory under ``snapshots/`` that the
  metadata does not know.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from pycontainerd.core import filters as core_filters
from pycontainerd.core.errdefs import FailedPreconditionError
from pycontainerd.core.snapshots import Info, Kind, Usage
from pycontainerd.snapshots import fsutil
from pycontainerd.snapshots.storage import MetaStore, Snapshot

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from pycontainerd.core.types import Mount

__all__ = ["DirSnapshotter", "info_adaptor"]

log = logging.getLogger(__name__)


def info_adaptor(info: Info) -> core_filters.Adaptor:
    """Filter fields of a snapshot: ``kind``, ``name``, ``parent``, ``labels.<key>``."""
    return core_filters.adapt(
        {
            "kind": str(info.kind).lower(),
            "name": info.name,
            "parent": info.parent,
            "labels": core_filters.joined_map(info.labels),
        }
    )


class DirSnapshotter:
    """Base of the snapshotters that keep each snapshot in ``<root>/snapshots/<id>``.

    Subclasses implement :meth:`_create`, :meth:`_mounts` and, when needed,
    :meth:`_data_dir`, :meth:`_delete`, :meth:`_on_commit`.

    Prepare and commit also exist as blocking steps (``prepare_blocking``,
    ``commit_blocking``: ``core.snapshots.BlockingSteps``), which the
    metadata snapshotter runs on its writer thread beside its own rows: a
    subclass changes what they do through the hooks above (or those two),
    not by overriding the asynchronous methods, which that path does not call.
    """

    #: The name used in messages (``overlayfs``, ``native``...).
    name: ClassVar[str] = "dir"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.snapshots_dir = self.root / "snapshots"
        self._snapshots_path = str(self.snapshots_dir)
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._store = MetaStore(self.root / "metadata.db")

    # --- what subclasses provide -------------------------------------------------

    def _create(self, path: Path, snap: Snapshot) -> None:
        """Build the directory of ``snap`` at ``path`` (which does not exist yet)."""
        raise NotImplementedError

    def _mounts(self, snap: Snapshot) -> list[Mount]:
        """The mounts of an active or view snapshot."""
        raise NotImplementedError

    def _data_dir(self, sid: str) -> Path:
        """Where the files of snapshot ``sid`` live (what ``usage`` measures)."""
        return self.snapshots_dir / sid

    def _delete(self, path: Path) -> None:
        """Delete a snapshot directory (renamed out of the way already), however deep."""
        fsutil.remove_tree(path)

    def _on_commit(self, sid: str) -> None:
        """Hook run inside the commit transaction (btrfs freezes the subvolume here)."""

    # --- helpers ---------------------------------------------------------------------

    def snapshot_dir(self, sid: str) -> Path:
        """``<root>/snapshots/<sid>``."""
        return self.snapshots_dir / sid

    def _new(
        self, kind: Kind, key: str, parent: str, labels: Mapping[str, str] | None
    ) -> list[Mount]:
        with self._store.update() as tx:
            snap = tx.create(kind, key, parent, labels)
            tmp = Path(tempfile.mkdtemp(prefix="new-", dir=self.snapshots_dir))
            tmp.rmdir()
            try:
                self._create(tmp, snap)
                tmp.rename(self.snapshot_dir(snap.id))
            except BaseException:
                if tmp.exists():
                    with contextlib.suppress(OSError):
                        self._delete(tmp)
                raise
            return self._mounts(snap)

    def _commit(self, name: str, key: str, labels: Mapping[str, str] | None) -> None:
        with self._store.update() as tx:
            snap = tx.get_snapshot(key)
            if snap.kind is not Kind.ACTIVE:
                msg = f"snapshot {key!r} is not active"
                raise FailedPreconditionError(msg)
            usage = fsutil.disk_usage(self._data_dir(snap.id))
            sid = tx.commit(key, name, usage, labels)
            self._on_commit(sid)

    def _remove(self, key: str) -> None:
        with self._store.update() as tx:
            sid, _kind = tx.remove(key)
            doomed = self.snapshots_dir / f"rm-{sid}"
            self.snapshot_dir(sid).rename(doomed)
        try:
            self._delete(doomed)
        except OSError as exc:
            log.warning("%s: cannot delete %s now, cleanup will: %s", self.name, doomed, exc)

    def _get_mounts(self, key: str) -> list[Mount]:
        with self._store.view() as tx:
            snap = tx.get_snapshot(key)
        if snap.kind not in (Kind.ACTIVE, Kind.VIEW):
            msg = f"requested snapshot {key!r} not active or view"
            raise FailedPreconditionError(msg)
        return self._mounts(snap)

    def _stat(self, key: str) -> Info:
        with self._store.view() as tx:
            return tx.get_info(key)[1]

    def _usage(self, key: str) -> Usage:
        with self._store.view() as tx:
            sid, info, usage = tx.get_info(key)
        if info.kind is Kind.ACTIVE:
            return fsutil.disk_usage(self._data_dir(sid))
        return usage

    def _update(self, info: Info, fieldpaths: tuple[str, ...]) -> Info:
        with self._store.update() as tx:
            return tx.update_info(info, fieldpaths)

    def _infos(self) -> list[Info]:
        with self._store.view() as tx:
            return [tx.get_info(key)[1] for key in tx.all_keys()]

    def _cleanup(self) -> list[str]:
        removed: list[str] = []
        with self._store.update() as tx:
            known = tx.ids()
            for entry in sorted(self.snapshots_dir.iterdir()):
                if entry.name in known:
                    continue
                try:
                    self._delete(entry)
                except OSError as exc:
                    log.warning("%s: cleanup cannot delete %s: %s", self.name, entry, exc)
                    continue
                removed.append(entry.name)
        return removed

    # --- the Snapshotter contract ----------------------------------------------------

    async def stat(self, key: str) -> Info:
        """Info of ``key``; ``NotFoundError`` when absent."""
        return await asyncio.to_thread(self._stat, key)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        """Update labels (``labels``, ``labels.<key>``; all of them when no path)."""
        return await asyncio.to_thread(self._update, info, fieldpaths)

    async def usage(self, key: str) -> Usage:
        """Usage of ``key`` alone (measured now for an active snapshot)."""
        return await asyncio.to_thread(self._usage, key)

    async def mounts(self, key: str) -> list[Mount]:
        """Mounts of an active or view snapshot; ``FailedPreconditionError`` otherwise."""
        return await asyncio.to_thread(self._get_mounts, key)

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create the active snapshot ``key`` on ``parent``."""
        return await asyncio.to_thread(self._new, Kind.ACTIVE, key, parent, labels)

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create the read-only view ``key`` of ``parent``."""
        return await asyncio.to_thread(self._new, Kind.VIEW, key, parent, labels)

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        """Commit active ``key`` as ``name``."""
        await asyncio.to_thread(self._commit, name, key, labels)

    def prepare_blocking(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """:meth:`prepare` on the calling thread (``core.snapshots.BlockingSteps``)."""
        return self._new(Kind.ACTIVE, key, parent, labels)

    def commit_blocking(
        self, name: str, key: str, *, labels: Mapping[str, str] | None = None
    ) -> None:
        """:meth:`commit` on the calling thread (``core.snapshots.BlockingSteps``)."""
        self._commit(name, key, labels)

    async def remove(self, key: str) -> None:
        """Remove ``key``; ``FailedPreconditionError`` when it has children."""
        await asyncio.to_thread(self._remove, key)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Every snapshot matching any of ``filters``."""
        flt = core_filters.parse(*filters)
        for info in await asyncio.to_thread(self._infos):
            if flt.match(info_adaptor(info)):
                yield info

    async def cleanup(self) -> None:
        """Delete directories no snapshot owns (left by crashes or deferred removal)."""
        await asyncio.to_thread(self._cleanup)

    async def close(self) -> None:
        """Release the metadata connection of this thread."""
        self._store.close()
