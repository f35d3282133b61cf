"""Fixtures of the runtime tests (defined in :mod:`pycontainerd.runtime.testing`)."""

from __future__ import annotations

from pycontainerd.runtime.testing import containerd

__all__ = ["containerd"]
