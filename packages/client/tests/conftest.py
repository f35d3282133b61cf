from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.testing import RealContainerd
from pycontainerd.daemon.testing import Daemon, daemon_env

if TYPE_CHECKING:
    from collections.abc import Iterator

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
    path = Path(tempfile.mkdtemp(prefix="pcl", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def ours(module_dir: Path) -> Iterator[Daemon]:
    base = module_dir / "p"
    base.mkdir()
    daemon = Daemon(base, env=daemon_env(MODULES))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.kill()


@pytest.fixture(scope="module")
def containerd(module_dir: Path) -> Iterator[RealContainerd]:
    base = module_dir / "g"
    base.mkdir()
    daemon = RealContainerd(base)
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so tests sharing a daemon do not see each other."""
    return f"t-{uuid.uuid4().hex[:12]}"
