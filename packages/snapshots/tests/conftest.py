"""Shared fixtures: a real content store on tmp_path."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.core.content import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    local = pytest.importorskip("pycontainerd.content.local")
    return local.LocalStore(tmp_path / "content")  # type: ignore[no-any-return]


@pytest.fixture
def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts, ownership, device nodes)")
