"""Fixtures for the metadata tests: a fresh database per test, under its own tmp_path.

``backend`` is a local content store beside it and ``cs`` the metadata content
store over both. Modules whose tests all run in namespace ``default`` say
``pytestmark = pytest.mark.usefixtures("default_namespace")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.metadata.content import MetadataContentStore
from pycontainerd.metadata.db import MetadataDB

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MetadataDB]:
    d = MetadataDB.open(tmp_path / "io.containerd.metadata.v1.sqlite" / "meta.db")
    yield d
    d.close()


@pytest.fixture
def backend(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "content")


@pytest.fixture
def cs(db: MetadataDB, backend: LocalStore) -> MetadataContentStore:
    return MetadataContentStore(db, backend)


@pytest.fixture
def default_namespace() -> Iterator[None]:
    with with_namespace("default"):
        yield
