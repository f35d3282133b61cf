"""Converters between protobuf messages and the core contract values (client side).

Pure functions, no I/O. Names follow the house convention
``<thing>_to_proto`` / ``<thing>_from_proto``. What the daemon's services
convert the same way (timestamps, descriptors, mounts, images, containers,
leases) lives in :mod:`pycontainerd.api.convert`; these are the client's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.api.convert import any_from_proto, any_to_proto, time_from_proto, time_to_proto
from pycontainerd.api.services.content.v1 import content_pb2
from pycontainerd.api.services.snapshots.v1 import snapshots_pb2
from pycontainerd.core import content, snapshots
from pycontainerd.core.events import Envelope

if TYPE_CHECKING:
    from pycontainerd.api.types import event_pb2


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
