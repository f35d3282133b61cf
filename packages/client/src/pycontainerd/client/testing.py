"""Test helpers: run containerd's Go daemon on a private root, state and socket.

The helpers live in :mod:`pycontainerd.core.testing` (one home for every
package's tests); this module keeps the names this package's tests,
``pycontainerd-ctr``'s and the end-to-end tests import. Importing it does not
import pytest or grpc.
"""

from __future__ import annotations

from pycontainerd.core.testing import (
    CONTAINERD,
    CTR,
    RealContainerd,
    require_binary,
    socket_answers,
    wait_for,
)

__all__ = ["CONTAINERD", "CTR", "RealContainerd", "require_binary", "socket_answers", "wait_for"]
