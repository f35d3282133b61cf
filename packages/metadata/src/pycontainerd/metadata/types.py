"""Value types of the metadata stores.

TODO(metadata): replace with the contracts in ``pycontainerd.core.images``,
``pycontainerd.core.containers`` and ``pycontainerd.core.leases`` once they land.
Timestamps are UTC nanoseconds since the epoch (0 = unset).

Importing this module must not import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """An OCI descriptor as an image target (the fields containerd stores)."""

    media_type: str = ""
    digest: str = ""
    size: int = 0
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    """A named reference to a target descriptor."""

    name: str
    target: Descriptor = field(default_factory=Descriptor)
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    updated_at: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class AnyValue:
    """A protobuf ``Any`` kept opaque: its type URL and serialized bytes."""

    type_url: str
    value: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeInfo:
    """Which runtime runs a container's tasks, and its options."""

    name: str
    options: AnyValue | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Container:
    """A container record: metadata only, no running process."""

    id: str
    runtime: RuntimeInfo
    spec: AnyValue | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    image: str = ""
    snapshotter: str = ""
    snapshot_key: str = ""
    extensions: Mapping[str, AnyValue] = field(default_factory=dict)
    sandbox_id: str = ""
    created_at: int = 0
    updated_at: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A lease: while it exists, the resources it holds are kept by the GC."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """A resource held by a lease (``content``, ``ingests``, ``snapshots/<name>``)."""

    id: str
    type: str
