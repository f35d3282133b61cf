"""``RemoteSnapshotter``: the ``Snapshotter`` contract over a daemon's Snapshots service.

The calls themselves are :class:`pycontainerd.api.snapshots_proxy.SnapshotsProxy`
(shared with the daemon's proxy plugins); this adds the client's namespace and
lease headers and its call timeout.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from pycontainerd.api.snapshots_proxy import SnapshotsProxy
from pycontainerd.client.proxies import call_options

if TYPE_CHECKING:
    from pycontainerd.client.proxies import Connection


class RemoteSnapshotter(SnapshotsProxy):
    """A ``Snapshotter`` backed by a daemon's Snapshots service."""

    def __init__(self, client: Connection, name: str) -> None:
        super().__init__(client.channel, name, functools.partial(call_options, client))
        self._client = client
