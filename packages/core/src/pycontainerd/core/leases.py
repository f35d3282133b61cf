"""The lease contract: keep resources alive while a client works.

A *lease* references content, snapshots and ingests; the garbage collector
does not remove what a lease references. Clients create one before a pull,
attach it to their requests (``pycontainerd.core.namespaces.with_lease``, the
``containerd-lease`` header), and delete it when the image is recorded.
A lease may carry the label ``containerd.io/gc.expire`` (RFC 3339) after
which the collector deletes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from pycontainerd.core.types import UNSET_TIME

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping
    from datetime import datetime

#: Label holding a lease's expiry time (RFC 3339).
EXPIRE_LABEL: Final = "containerd.io/gc.expire"
#: Label marking a lease as flat (references no children of its resources).
FLAT_LABEL: Final = "containerd.io/gc.flat"


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A lease.

    Attributes:
        id: unique within a namespace.
        created_at: set by the manager on create.
        labels: metadata; see ``EXPIRE_LABEL``.
    """

    id: str
    created_at: datetime = UNSET_TIME
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """A resource a lease references.

    Attributes:
        id: the resource's identifier (a digest, an ingest ref, a snapshot key).
        type: ``content``, ``ingests`` or ``snapshots/<snapshotter>``.
    """

    id: str
    type: str


@runtime_checkable
class Manager(Protocol):
    """Leases of the current namespace (containerd's ``leases.Manager``)."""

    async def create(self, lease_id: str, *, labels: Mapping[str, str] | None = None) -> Lease:
        """Create a lease; ``AlreadyExistsError`` when the id is taken."""
        ...

    async def delete(self, lease_id: str, *, sync: bool = False) -> None:
        """Delete a lease; with ``sync``, wait for garbage collection."""
        ...

    async def list(self, *filters: str) -> builtins.list[Lease]:
        """Leases matching any of ``filters`` (``id``, ``labels.<key>``)."""
        ...

    async def add_resource(self, lease_id: str, resource: Resource) -> None:
        """Make the lease reference ``resource``."""
        ...

    async def delete_resource(self, lease_id: str, resource: Resource) -> None:
        """Drop the lease's reference to ``resource``."""
        ...

    async def list_resources(self, lease_id: str) -> builtins.list[Resource]:
        """What the lease references."""
        ...
