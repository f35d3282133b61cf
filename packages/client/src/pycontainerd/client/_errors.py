"""The client's single error-mapping edge: failed gRPC calls become errdefs errors.

Every proxy call runs inside :func:`rpc_errors`, so callers only ever see
``pycontainerd.core.errdefs`` kinds whose ``str()`` reads like the daemon's
message (``content digest sha256:...: not found``), as containerd's Go client
does with ``errgrpc.ToNative``.
"""

from __future__ import annotations

from pycontainerd.api.errgrpc import rpc_errors

__all__ = ["rpc_errors"]
