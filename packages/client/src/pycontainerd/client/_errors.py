"""The client's single error-mapping edge: failed gRPC calls become errdefs errors.

Every proxy call runs inside :func:`rpc_errors`, so callers only ever see
``pycontainerd.core.errdefs`` kinds whose ``str()`` reads like the daemon's
message (``content digest sha256:...: not found``), as containerd's Go client
does with ``errgrpc.ToNative``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import grpc

from pycontainerd.api.errgrpc import from_rpc_error

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def rpc_errors() -> Iterator[None]:
    """Re-raise a failed gRPC call inside the block as its errdefs kind."""
    try:
        yield
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err
