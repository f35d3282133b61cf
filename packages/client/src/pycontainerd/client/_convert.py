"""Converters between protobuf messages and the core contract values (client side).

Pure functions, no I/O. Names follow the house convention
``<thing>_to_proto`` / ``<thing>_from_proto``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from google.protobuf import any_pb2, timestamp_pb2

from pycontainerd.api.services.containers.v1 import containers_pb2
from pycontainerd.api.services.content.v1 import content_pb2
from pycontainerd.api.services.images.v1 import images_pb2
from pycontainerd.api.services.leases.v1 import leases_pb2
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2
from pycontainerd.api.types import descriptor_pb2, mount_pb2, platform_pb2
from pycontainerd.core import content, snapshots
from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.events import Envelope
from pycontainerd.core.images import Image
from pycontainerd.core.leases import Lease, Resource
from pycontainerd.core.platforms import Platform
from pycontainerd.core.types import UNSET_TIME, AnyValue, Descriptor, Mount

if TYPE_CHECKING:
    from pycontainerd.api.types import event_pb2


def time_from_proto(ts: timestamp_pb2.Timestamp) -> datetime:
    """A UTC ``datetime``; an unset timestamp is ``UNSET_TIME``."""
    if ts.seconds == 0 and ts.nanos == 0:
        return UNSET_TIME
    return ts.ToDatetime(tzinfo=UTC)


def time_to_proto(dt: datetime) -> timestamp_pb2.Timestamp:
    """A protobuf ``Timestamp`` for ``dt`` (naive values are taken as UTC)."""
    ts = timestamp_pb2.Timestamp()
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    ts.FromDatetime(dt)
    return ts


def any_from_proto(value: any_pb2.Any) -> AnyValue:
    """An opaque ``AnyValue``."""
    return AnyValue(type_url=value.type_url, value=value.value)


def any_to_proto(value: AnyValue) -> any_pb2.Any:
    """A protobuf ``Any``."""
    return any_pb2.Any(type_url=value.type_url, value=value.value)


def platform_from_proto(p: platform_pb2.Platform) -> Platform:
    """A core ``Platform``."""
    return Platform(
        os=p.os, architecture=p.architecture, variant=p.variant, os_version=p.os_version
    )


def descriptor_to_proto(d: Descriptor) -> descriptor_pb2.Descriptor:
    """A wire descriptor (urls and platform are not carried by containerd's type)."""
    return descriptor_pb2.Descriptor(
        media_type=d.media_type, digest=d.digest, size=d.size, annotations=dict(d.annotations)
    )


def descriptor_from_proto(d: descriptor_pb2.Descriptor) -> Descriptor:
    """A core ``Descriptor``."""
    return Descriptor(
        media_type=d.media_type, digest=d.digest, size=d.size, annotations=dict(d.annotations)
    )


def mount_from_proto(m: mount_pb2.Mount) -> Mount:
    """A core ``Mount``."""
    return Mount(type=m.type, source=m.source, target=m.target, options=tuple(m.options))


def mount_to_proto(m: Mount) -> mount_pb2.Mount:
    """A wire mount."""
    return mount_pb2.Mount(type=m.type, source=m.source, target=m.target, options=list(m.options))


def content_info_from_proto(info: content_pb2.Info) -> content.Info:
    """A content ``Info``."""
    return content.Info(
        digest=info.digest,
        size=info.size,
        created_at=time_from_proto(info.created_at),
        updated_at=time_from_proto(info.updated_at),
        labels=dict(info.labels),
    )


def content_info_to_proto(info: content.Info) -> content_pb2.Info:
    """A wire content ``Info``."""
    return content_pb2.Info(
        digest=info.digest,
        size=info.size,
        created_at=time_to_proto(info.created_at),
        updated_at=time_to_proto(info.updated_at),
        labels=dict(info.labels),
    )


def status_from_proto(st: content_pb2.Status) -> content.Status:
    """An ingest ``Status``."""
    return content.Status(
        ref=st.ref,
        offset=st.offset,
        total=st.total,
        expected=st.expected,
        started_at=time_from_proto(st.started_at),
        updated_at=time_from_proto(st.updated_at),
    )


def snapshot_info_from_proto(info: snapshots_pb2.Info) -> snapshots.Info:
    """A snapshot ``Info``."""
    return snapshots.Info(
        kind=snapshots.Kind(info.kind),
        name=info.name,
        parent=info.parent,
        labels=dict(info.labels),
        created_at=time_from_proto(info.created_at),
        updated_at=time_from_proto(info.updated_at),
    )


def snapshot_info_to_proto(info: snapshots.Info) -> snapshots_pb2.Info:
    """A wire snapshot ``Info``."""
    return snapshots_pb2.Info(
        kind=int(info.kind),  # type: ignore[arg-type]  # the enum values are the wire's
        name=info.name,
        parent=info.parent,
        labels=dict(info.labels),
        created_at=time_to_proto(info.created_at),
        updated_at=time_to_proto(info.updated_at),
    )


def image_from_proto(image: images_pb2.Image) -> Image:
    """A core ``Image``."""
    return Image(
        name=image.name,
        target=descriptor_from_proto(image.target),
        labels=dict(image.labels),
        created_at=time_from_proto(image.created_at),
        updated_at=time_from_proto(image.updated_at),
    )


def image_to_proto(image: Image) -> images_pb2.Image:
    """A wire image."""
    return images_pb2.Image(
        name=image.name,
        target=descriptor_to_proto(image.target),
        labels=dict(image.labels),
        created_at=time_to_proto(image.created_at),
        updated_at=time_to_proto(image.updated_at),
    )


def container_from_proto(c: containers_pb2.Container) -> Container:
    """A core ``Container``."""
    return Container(
        id=c.id,
        runtime=RuntimeInfo(
            name=c.runtime.name,
            options=any_from_proto(c.runtime.options) if c.runtime.HasField("options") else None,
        ),
        labels=dict(c.labels),
        image=c.image,
        spec=any_from_proto(c.spec) if c.HasField("spec") else None,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        created_at=time_from_proto(c.created_at),
        updated_at=time_from_proto(c.updated_at),
        extensions={k: any_from_proto(v) for k, v in c.extensions.items()},
        sandbox_id=c.sandbox,
    )


def container_to_proto(c: Container) -> containers_pb2.Container:
    """A wire container."""
    msg = containers_pb2.Container(
        id=c.id,
        labels=dict(c.labels),
        image=c.image,
        snapshotter=c.snapshotter,
        snapshot_key=c.snapshot_key,
        created_at=time_to_proto(c.created_at),
        updated_at=time_to_proto(c.updated_at),
        extensions={k: any_to_proto(v) for k, v in c.extensions.items()},
        sandbox=c.sandbox_id,
    )
    msg.runtime.name = c.runtime.name
    if c.runtime.options is not None:
        msg.runtime.options.CopyFrom(any_to_proto(c.runtime.options))
    if c.spec is not None:
        msg.spec.CopyFrom(any_to_proto(c.spec))
    return msg


def lease_from_proto(lease: leases_pb2.Lease) -> Lease:
    """A core ``Lease``."""
    return Lease(
        id=lease.id, created_at=time_from_proto(lease.created_at), labels=dict(lease.labels)
    )


def resource_to_proto(r: Resource) -> leases_pb2.Resource:
    """A wire lease resource."""
    return leases_pb2.Resource(id=r.id, type=r.type)


def resource_from_proto(r: leases_pb2.Resource) -> Resource:
    """A core lease ``Resource``."""
    return Resource(id=r.id, type=r.type)


def envelope_from_proto(env: event_pb2.Envelope) -> Envelope:
    """A core event ``Envelope``."""
    return Envelope(
        timestamp=time_from_proto(env.timestamp),
        namespace=env.namespace,
        topic=env.topic,
        event=any_from_proto(env.event),
    )


def envelope_to_proto(env: Envelope) -> event_pb2.Envelope:
    """A wire event ``Envelope``."""
    from pycontainerd.api.types import event_pb2

    return event_pb2.Envelope(
        timestamp=time_to_proto(env.timestamp),
        namespace=env.namespace,
        topic=env.topic,
        event=any_to_proto(env.event),
    )
