from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.testing import TRANSFER_PLUGINS
from pycontainerd.daemon.testing import Daemon, daemon_env, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tempdir("ptr") as base, Daemon(base, env=daemon_env(TRANSFER_PLUGINS)) as d:
        yield d


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image verifiers' directory of ``verified_daemon``."""
    return tmp_path_factory.mktemp("verifiers")


@pytest.fixture(scope="module")
def verified_daemon(bin_dir: Path) -> Iterator[Daemon]:
    """A daemon whose ``bindir`` image verifier runs what ``bin_dir`` holds."""
    plugin = '[plugins."io.containerd.image-verifier.v1.bindir"]'
    config = f'version = 2\n{plugin}\nbin_dir = "{bin_dir}"\n'
    with (
        short_tempdir("pvf") as base,
        Daemon(base, config=config, env=daemon_env(TRANSFER_PLUGINS)) as d,
    ):
        yield d


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so tests sharing a daemon do not see each other."""
    return f"t-{uuid.uuid4().hex[:12]}"
