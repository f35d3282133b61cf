from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.testing import TRANSFER_PLUGINS
from pycontainerd.daemon.testing import Daemon, daemon_env, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with short_tempdir("ptr") as base, Daemon(base, env=daemon_env(TRANSFER_PLUGINS)) as d:
        yield d


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so tests sharing a daemon do not see each other."""
    return f"t-{uuid.uuid4().hex[:12]}"
