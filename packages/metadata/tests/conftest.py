"""Fixtures for the metadata tests: a fresh database per test, under its own tmp_path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.metadata.db import MetadataDB

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MetadataDB]:
    d = MetadataDB.open(tmp_path / "io.containerd.metadata.v1.sqlite" / "meta.db")
    yield d
    d.close()
