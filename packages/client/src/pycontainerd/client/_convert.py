"""Converters between protobuf messages and the core contract values (client side).

Pure functions, no I/O. Names follow the house convention
``<thing>_to_proto`` / ``<thing>_from_proto``. What the daemon's services
convert the same way (timestamps, descriptors, mounts, snapshot infos,
images, containers, leases, event envelopes) lives in
:mod:`pycontainerd.api.convert`. These are the client's own: the Content
service leaves unset timestamps out, where the client sends them as zero.
"""

from __future__ import annotations

from pycontainerd.api.convert import time_from_proto, time_to_proto
from pycontainerd.api.services.content.v1 import content_pb2
from pycontainerd.core import content


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
