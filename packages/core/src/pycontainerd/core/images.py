"""The image store contract: names pointing at content.

In containerd an *image* is only a record: a name (usually a reference such
as ``docker.io/library/busybox:latest``) and the descriptor of its root
manifest or index in the content store. Unpacking, platforms and layers are
derived from that target by walking content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pycontainerd.core.types import UNSET_TIME, Descriptor

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping
    from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """A named image record.

    Attributes:
        name: unique within a namespace; typically a full reference.
        target: descriptor of the manifest or index in the content store.
        labels: mutable metadata.
        created_at: set by the store on create.
        updated_at: set by the store on every update.
    """

    name: str
    target: Descriptor = field(default_factory=Descriptor)
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime = UNSET_TIME
    updated_at: datetime = UNSET_TIME


@runtime_checkable
class Store(Protocol):
    """Image records of the current namespace (containerd's ``images.Store``).

    The namespace comes from ``pycontainerd.core.namespaces``.
    """

    async def get(self, name: str) -> Image:
        """The image ``name``; ``NotFoundError`` when absent."""
        ...

    async def list(self, *filters: str) -> builtins.list[Image]:
        """Images matching any of ``filters``.

        Fields: ``name``, ``target.digest``, ``target.mediatype``, ``labels.<key>``.
        """
        ...

    async def create(self, image: Image) -> Image:
        """Store a new image; ``AlreadyExistsError`` when the name is taken."""
        ...

    async def update(self, image: Image, *fieldpaths: str) -> Image:
        """Change ``labels``/``labels.<key>``/``target`` (all when no paths are given)."""
        ...

    async def delete(self, name: str, *, sync: bool = False) -> None:
        """Remove the record; with ``sync``, wait for garbage collection."""
        ...
