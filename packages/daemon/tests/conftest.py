from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.testing import short_tempdir
from pycontainerd.daemon.testing import Daemon, MakeDaemon, daemon_env

if TYPE_CHECKING:
    from collections.abc import Iterator

TESTS_DIR = Path(__file__).resolve().parent
# The daemon subprocesses import the test plugin module from this directory.
TEST_MODULES = ("pycontainerd.daemon.plugin", "pcd_daemon_testplugins")


TEST_REVISION = "0123456789abcdef"
# Fixed, because HEAD moves while the suite runs in a shared checkout.


def env_for_tests(extra: dict[str, str] | None = None) -> dict[str, str]:
    fixed = {"PYCONTAINERD_REVISION": TEST_REVISION, **(extra or {})}
    return daemon_env(TEST_MODULES, python_path=[str(TESTS_DIR)], extra=fixed)


@pytest.fixture
def env() -> dict[str, str]:
    return env_for_tests()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with short_tempdir("pcd") as path:
        yield path


@pytest.fixture
def make_daemon(short_dir: Path) -> Iterator[MakeDaemon]:
    started: list[Daemon] = []

    def make(
        *, config: str | None = None, env: dict[str, str] | None = None, name: str = "d"
    ) -> Daemon:
        base = short_dir / name
        base.mkdir(exist_ok=True)
        d = Daemon(base, config=config, env=env_for_tests(env))
        started.append(d)
        return d

    yield make
    for d in started:
        d.kill()
