"""Plugin module for pycontainerd-content (entry point ``pycontainerd.plugins``).

Importing this module must not import grpc. This subsystem is not built yet:
it contributes no registrations until its issue lands.
"""

from __future__ import annotations

from pycontainerd.core.plugin import Registration, hookimpl


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    """Nothing yet: the subsystem is not implemented."""
    return []
