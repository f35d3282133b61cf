"""Python client library for containerd and pycontainerd.

``Client`` (in :mod:`pycontainerd.client.client`) connects to a daemon and
hands out proxies (:mod:`pycontainerd.client.proxies`) that implement the core
contracts over gRPC. Importing this package is cheap; ``Client`` and the
proxies import grpc when first used.

Planned sibling modules: ``pycontainerd.remotes`` (registry resolver,
``hosts.toml``), ``pycontainerd.remotes.pull``/``push`` and
``pycontainerd.remotes.archive`` (OCI layout and ``docker save`` import/export);
they build on ``Client`` and the proxies only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pycontainerd.client.client import Client

__all__ = ["Client"]


def __getattr__(name: str) -> Any:
    if name == "Client":
        from pycontainerd.client.client import Client

        return Client
    raise AttributeError(name)
