from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.testing import RealContainerd
from pycontainerd.daemon.testing import Daemon, daemon_env, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

# The plugin modules our daemon loads for these tests (autoload off).
MODULES = (
    "pycontainerd.daemon.plugin",
    "pycontainerd.events.plugin",
    "pycontainerd.content.plugin",
    "pycontainerd.snapshots.plugin",
    "pycontainerd.metadata.plugin",
)


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    with short_tempdir("pcl") as path:
        yield path


@pytest.fixture(scope="module")
def ours(module_dir: Path) -> Iterator[Daemon]:
    base = module_dir / "p"
    base.mkdir()
    with Daemon(base, env=daemon_env(MODULES)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def containerd(module_dir: Path) -> Iterator[RealContainerd]:
    base = module_dir / "g"
    base.mkdir()
    with RealContainerd(base) as daemon:
        yield daemon


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so tests sharing a daemon do not see each other."""
    return f"t-{uuid.uuid4().hex[:12]}"
