"""ttrpc for asyncio: containerd's lightweight RPC over unix sockets.

ttrpc is what containerd speaks to its runtime shims (``containerd.task.v2.Task``)
and what shims use to forward events back to the daemon
(``containerd.services.events.ttrpc.v1.Events/Forward``). This package is a
client and a server for it, wire-compatible with containerd's Go ttrpc:
10-byte frames, ``ttrpc.Request``/``ttrpc.Response`` envelopes, metadata,
per-call timeouts, the 4 MiB message limit, and the same status codes and texts.

Importing this package must not import grpc: the shim runs on it alone.
"""

from __future__ import annotations

from pycontainerd.api.ttrpc._wire import (
    MESSAGE_LENGTH_MAX,
    NAMESPACE_KEY,
    ClosedError,
)
from pycontainerd.api.ttrpc.client import Client, ServiceClient, socket_path
from pycontainerd.api.ttrpc.server import Server
from pycontainerd.api.ttrpc.services import CallContext, Handler, ServiceSpec

__all__ = [
    "MESSAGE_LENGTH_MAX",
    "NAMESPACE_KEY",
    "CallContext",
    "Client",
    "ClosedError",
    "Handler",
    "Server",
    "ServiceClient",
    "ServiceSpec",
    "socket_path",
]
