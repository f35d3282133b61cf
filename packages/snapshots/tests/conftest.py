"""Shared fixtures: a real content store on tmp_path."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from pycontainerd.core.content import Store
    from pycontainerd.snapshots.applyworker import ApplyWorkers


@pytest.fixture
def store(tmp_path: Path) -> Store:
    local = pytest.importorskip("pycontainerd.content.local")
    return local.LocalStore(tmp_path / "content")  # type: ignore[no-any-return]


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, ownership, device nodes)")


@pytest.fixture(params=["thread", "process"])
async def workers(request: pytest.FixtureRequest) -> AsyncIterator[ApplyWorkers | None]:
    """How the differ applies a local blob: in a thread (None) or in an applier process."""
    if request.param == "thread":
        yield None
        return
    from pycontainerd.snapshots.applyworker import ApplyWorkers

    pool = ApplyWorkers()
    pool.start()
    try:
        yield pool
    finally:
        await pool.aclose()
