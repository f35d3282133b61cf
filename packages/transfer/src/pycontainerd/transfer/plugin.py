"""Plugin module for pycontainerd-transfer (entry point ``pycontainerd.plugins:transfer``)."""

from __future__ import annotations

from pycontainerd.core.plugin import Registration, hookimpl


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """The streaming manager, the local transferrer and their gRPC services."""
    return []
