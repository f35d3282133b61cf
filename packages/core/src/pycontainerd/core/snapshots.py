"""The snapshotter contract: layered filesystems as mounts.

This mirrors containerd's ``snapshots.Snapshotter``. A snapshotter manages
*snapshots*, each named by a key and optionally based on a committed parent:

* ``prepare(key, parent)`` creates an **active** snapshot, a writable layer on
  top of ``parent``, and returns the mounts that show it. Unpacking a layer
  or running a container writes there.
* ``view(key, parent)`` creates a read-only **view** of ``parent``.
* ``commit(name, key)`` turns the active snapshot ``key`` into the
  **committed** snapshot ``name``, which can then be a parent; ``key`` is gone.
* ``remove(key)`` deletes a snapshot that no other snapshot is based on
  (``FailedPreconditionError`` otherwise).

Only active and view snapshots have mounts; a committed snapshot is reached
through a view or an active child. Keys of active/view snapshots and names of
committed ones share one namespace per snapshotter: reusing one raises
``AlreadyExistsError``; an unknown one raises ``NotFoundError``.

Everything is async; implementations do their I/O off the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.types import UNSET_TIME

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from datetime import datetime

    from pycontainerd.core.types import Mount


class Kind(IntEnum):
    """A snapshot's kind; the values are those of the wire enum."""

    UNKNOWN = 0
    VIEW = 1
    ACTIVE = 2
    COMMITTED = 3

    def __str__(self) -> str:
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> Kind:
        """``view``, ``active`` or ``committed`` (any case), as ``ctr`` prints them.

        Raises:
            InvalidArgumentError: any other text.
        """
        try:
            kind = cls[text.upper()]
        except KeyError:
            kind = cls.UNKNOWN
        if kind is cls.UNKNOWN:
            msg = f"unknown snapshot kind {text!r}"
            raise InvalidArgumentError(msg)
        return kind


@dataclass(frozen=True, slots=True, kw_only=True)
class Info:
    """What a snapshotter knows about one snapshot.

    Attributes:
        kind: active, view or committed.
        name: its key (active/view) or name (committed).
        parent: the committed snapshot it is based on, ``""`` for none.
        labels: mutable metadata (``containerd.io/gc.*`` hold GC references).
        created_at: when it was created.
        updated_at: when it last changed.
    """

    kind: Kind
    name: str
    parent: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime = UNSET_TIME
    updated_at: datetime = UNSET_TIME


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Resources a snapshot uses on its own (not counting its parents).

    Attributes:
        inodes: number of inodes.
        size: bytes on disk.
    """

    inodes: int = 0
    size: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(inodes=self.inodes + other.inodes, size=self.size + other.size)


@runtime_checkable
class BlockingSteps(Protocol):
    """A backend whose prepare and commit may also run, blocking, on a thread of the caller's.

    The metadata snapshotter runs them on its database's writer thread right
    after (prepare) or before (commit) its own row: one trip off the event
    loop for each step instead of two. Same semantics and errors as the
    asynchronous methods.
    """

    def prepare_blocking(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """:meth:`Snapshotter.prepare`, on the calling thread."""
        ...

    def commit_blocking(
        self, name: str, key: str, *, labels: Mapping[str, str] | None = None
    ) -> None:
        """:meth:`Snapshotter.commit`, on the calling thread."""
        ...


@runtime_checkable
class Snapshotter(Protocol):
    """A snapshotter (containerd's ``snapshots.Snapshotter``)."""

    async def stat(self, key: str) -> Info:
        """Info of ``key``; ``NotFoundError`` when absent."""
        ...

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        """Update the labels of ``info.name`` (``labels``/``labels.<key>`` paths)."""
        ...

    async def usage(self, key: str) -> Usage:
        """Disk usage of ``key`` alone. May be expensive for active snapshots."""
        ...

    async def mounts(self, key: str) -> list[Mount]:
        """Mounts of an active or view snapshot, as ``prepare``/``view`` returned them."""
        ...

    async def prepare(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create the active snapshot ``key`` on ``parent`` and return its mounts."""
        ...

    async def view(
        self, key: str, parent: str = "", *, labels: Mapping[str, str] | None = None
    ) -> list[Mount]:
        """Create the read-only view ``key`` of ``parent`` and return its mounts."""
        ...

    async def commit(self, name: str, key: str, *, labels: Mapping[str, str] | None = None) -> None:
        """Commit the active snapshot ``key`` as ``name``; ``key`` ceases to exist."""
        ...

    async def remove(self, key: str) -> None:
        """Remove ``key``; ``FailedPreconditionError`` when it has children."""
        ...

    def walk(self, *filters: str) -> AsyncIterator[Info]:
        """Every snapshot matching any of ``filters``.

        Fields: ``kind``, ``name``, ``parent``, ``labels.<key>``.
        """
        ...

    async def close(self) -> None:
        """Release resources; the snapshotter is not used afterwards."""
        ...


@runtime_checkable
class Cleaner(Protocol):
    """Optional: a snapshotter that can reclaim space of removed snapshots later.

    containerd removes snapshot metadata synchronously and lets the garbage
    collector call ``cleanup`` to delete the directories in the background.
    """

    async def cleanup(self) -> None:
        """Delete data of snapshots that no longer exist."""
        ...


@runtime_checkable
class SnapshotterProvider(Protocol):
    """Hands out namespaced snapshotters by backend name (containerd's ``db.Snapshotter``).

    The metadata plugin's instance implements this: the Snapshots service and
    the Tasks service take their snapshotters from it, so every caller shares
    one namespaced view per backend without importing the metadata package.
    """

    def snapshotter(self, name: str) -> Snapshotter:
        """The namespaced view of backend ``name``; ``NotFoundError`` when none is loaded."""
        ...
