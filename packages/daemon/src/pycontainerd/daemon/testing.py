"""Test helpers: run our daemon as a subprocess on its own root, state and socket.

The helpers live in :mod:`pycontainerd.core.testing` (one home for every
package's tests); this module keeps the names this package's tests and the
end-to-end tests import. Importing it does not import pytest or grpc.
"""

from __future__ import annotations

from pycontainerd.core.testing import (
    CTR,
    DEFAULT_MODULES,
    HEAVY_LOCK,
    Daemon,
    MakeDaemon,
    containerd_cmd,
    daemon_env,
    load_exclusion,
    require_binary,
    short_tempdir,
    wait_for,
)

__all__ = [
    "CTR",
    "DEFAULT_MODULES",
    "HEAVY_LOCK",
    "Daemon",
    "MakeDaemon",
    "containerd_cmd",
    "daemon_env",
    "load_exclusion",
    "require_binary",
    "short_tempdir",
    "wait_for",
]
