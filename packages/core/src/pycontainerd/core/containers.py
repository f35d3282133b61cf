"""The container store contract: metadata about containers, not processes.

A containerd *container* is a record tying together an OCI runtime spec, a
snapshot for its root filesystem, the image it came from and the runtime
that will run its tasks. Creating one starts nothing; a *task* does that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pycontainerd.core.types import UNSET_TIME, AnyValue

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping
    from datetime import datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeInfo:
    """Which runtime runs the container's tasks.

    Attributes:
        name: e.g. ``io.containerd.runc.v2``.
        options: runtime-specific options, opaque here.
    """

    name: str
    options: AnyValue | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """A container record.

    Attributes:
        id: unique within a namespace; must pass ``identifiers.validate``.
        labels: mutable metadata.
        image: name of the image it was created from, if any.
        runtime: the runtime for its tasks.
        spec: the OCI runtime spec, opaque here (``types.runtime.Spec``).
        snapshotter: which snapshotter holds its root filesystem.
        snapshot_key: the key of that snapshot.
        created_at: set by the store on create.
        updated_at: set by the store on every update.
        extensions: client-defined extra data, keyed by name.
        sandbox_id: the sandbox it belongs to, if any.
    """

    id: str
    runtime: RuntimeInfo
    labels: Mapping[str, str] = field(default_factory=dict)
    image: str = ""
    spec: AnyValue | None = None
    snapshotter: str = ""
    snapshot_key: str = ""
    created_at: datetime = UNSET_TIME
    updated_at: datetime = UNSET_TIME
    extensions: Mapping[str, AnyValue] = field(default_factory=dict)
    sandbox_id: str = ""


@runtime_checkable
class Store(Protocol):
    """Container records of the current namespace (containerd's ``containers.Store``)."""

    async def get(self, container_id: str) -> Container:
        """The container; ``NotFoundError`` when absent."""
        ...

    async def list(self, *filters: str) -> builtins.list[Container]:
        """Containers matching any of ``filters``.

        Fields: ``id``, ``image``, ``runtime.name``, ``labels.<key>``.
        """
        ...

    async def create(self, container: Container) -> Container:
        """Store a new record; ``AlreadyExistsError`` when the id is taken."""
        ...

    async def update(self, container: Container, *fieldpaths: str) -> Container:
        """Change the mutable fields named by ``fieldpaths`` (all when none).

        Paths: ``labels``, ``labels.<key>``, ``spec``, ``image``, ``snapshotkey``,
        ``extensions.<name>``; ``id``, ``runtime`` and ``snapshotter`` are fixed
        at creation.
        """
        ...

    async def delete(self, container_id: str) -> None:
        """Remove the record; ``NotFoundError`` when absent."""
        ...
