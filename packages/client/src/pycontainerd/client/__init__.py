"""Python client library for containerd and pycontainerd.

``Client`` (in :mod:`pycontainerd.client.client`) connects to a daemon; its
high-level methods (:mod:`pycontainerd.client.facade`) return the objects of
:mod:`pycontainerd.client.objects`, and it hands out proxies
(:mod:`pycontainerd.client.proxies`) that implement the core contracts over
gRPC. :mod:`pycontainerd.client.sync` is the blocking twin. Importing this
package is cheap; ``Client`` and the proxies import grpc when first used.

The registry code (resolver, ``hosts.toml``, pull/push, archive import and
export) lives in ``pycontainerd-remotes``; the old import paths here re-export it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pycontainerd.client.address import TLSConfig
    from pycontainerd.client.client import Client
    from pycontainerd.client.stdio import Stdio

__all__ = ["Client", "Stdio", "TLSConfig"]

_WHERE = {
    "Client": "pycontainerd.client.client",
    "Stdio": "pycontainerd.client.stdio",
    "TLSConfig": "pycontainerd.client.address",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(module), name)
