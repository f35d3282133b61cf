"""Fixtures of the runtime tests: ``containerd`` (from :mod:`pycontainerd.runtime.testing`)
and ``reaper``, the shim's child reaper installed for one test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.runtime.shim.reaper import Reaper
from pycontainerd.runtime.testing import containerd

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["containerd", "reaper"]


@pytest.fixture
async def reaper() -> AsyncIterator[Reaper]:
    r = Reaper()
    r.install()
    try:
        yield r
    finally:
        r.uninstall()
