"""Value types shared by several contracts: descriptors, mounts, opaque ``Any`` values.

They mirror containerd's Go types (``ocispec.Descriptor``, ``mount.Mount``,
``typeurl.Any``) field for field, so containerd's documentation reads across.
Timestamps throughout the contracts are timezone-aware ``datetime`` in UTC;
``UNSET_TIME`` (the Unix epoch, protobuf's unset ``Timestamp``) marks "never".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from pycontainerd.core.platforms import Platform

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["UNSET_TIME", "AnyValue", "Descriptor", "Mount", "Platform"]

UNSET_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class AnyValue:
    """A serialized protobuf ``Any`` kept opaque: its type URL and bytes.

    Core never decodes it (it has no protobuf); the api edge does.
    """

    type_url: str
    value: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class Descriptor:
    """An OCI content descriptor: what a blob is, how big, and its digest.

    Attributes:
        media_type: e.g. ``application/vnd.oci.image.manifest.v1+json``.
        digest: ``algorithm:hex`` of the blob.
        size: the blob's length in bytes.
        urls: where else the blob may be fetched from (foreign layers).
        annotations: free-form metadata.
        platform: for manifests in an index, the platform they are for.
    """

    media_type: str = ""
    digest: str = ""
    size: int = 0
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """One mount a snapshotter hands out (containerd's ``mount.Mount``).

    Attributes:
        type: filesystem type (``overlay``, ``bind``, ``btrfs``...).
        source: device, directory or pseudo-source (``overlay``).
        target: sub-path within the mount point; empty for the root.
        options: ``mount(8)`` style options (``ro``, ``lowerdir=...``).
    """

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()

    @property
    def read_only(self) -> bool:
        """Whether the options ask for a read-only mount."""
        return "ro" in self.options
