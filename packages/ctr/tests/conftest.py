from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.testing import RealContainerd
from pycontainerd.core.testing import TRANSFER_PLUGINS, runtime_daemon
from pycontainerd.daemon.testing import Daemon, daemon_env, short_tempdir
from pycontainerd.remotes.testing import Registry, seeded_registry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


def ours_ctr(
    address: str, *args: str, namespace: str = "default", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run our ``ctr`` (this interpreter) against ``address``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
    return subprocess.run(
        [sys.executable, "-m", "pycontainerd.ctr", "-a", address, "-n", namespace, *args],
        capture_output=True,
        input=stdin,
        env=env,
        timeout=60,
        check=False,
    )


def go_ctr(
    address: str, *args: str, namespace: str = "default", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run containerd's Go ``ctr`` against ``address``."""
    return subprocess.run(
        ["/usr/bin/ctr", "-a", address, "-n", namespace, *args],
        capture_output=True,
        input=stdin,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="session")
def go() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    return go_ctr


@pytest.fixture(scope="session")
def py() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    return ours_ctr


#: image commands that go through the Transfer service unless ``--local`` is given
TRANSFER_COMMANDS = frozenset({"pull", "push", "import", "export", "tag"})


def ours_local_ctr(
    address: str, *args: str, namespace: str = "default", stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Our ``ctr`` with ``--local`` added to image transfer commands (the client-side path)."""
    argv = list(args)
    if (
        len(argv) >= 2
        and argv[0] in ("images", "image", "i")
        and argv[1] in TRANSFER_COMMANDS
        and not any(a.startswith("--local") for a in argv)
    ):
        argv.insert(2, "--local")
    return ours_ctr(address, *argv, namespace=namespace, stdin=stdin)


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    with short_tempdir("pctr") as path:
        yield path


@pytest.fixture(scope="module")
def containerd(module_dir: Path) -> Iterator[RealContainerd]:
    base = module_dir / "g"
    base.mkdir()
    with RealContainerd(base) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def ours(module_dir: Path) -> Iterator[Daemon]:
    base = module_dir / "p"
    base.mkdir()
    with Daemon(base, env=daemon_env(TRANSFER_PLUGINS)) as daemon:
        yield daemon


@pytest.fixture(scope="session")
def py_local() -> Callable[..., subprocess.CompletedProcess[bytes]]:
    return ours_local_ctr


@pytest.fixture(scope="module")
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 holding the test module's ``REGISTRY_IMAGES``.

    That is a mapping of ``"<repository>:<tag>"`` to the image to push there.
    """
    with seeded_registry(tmp_path_factory.mktemp("reg"), request.module.REGISTRY_IMAGES) as reg:
        yield reg


@pytest.fixture
def ns() -> str:
    """A namespace of the test's own, so tests sharing a daemon do not see each other."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def pull(py: Callable[..., subprocess.CompletedProcess[bytes]]) -> Callable[..., str]:
    """``ctr images pull --plain-http --snapshotter native [extra...] <ref>`` run by ``py``.

    Called as ``pull(address, ref, namespace, *extra)``; fails the test on a
    non-zero exit and returns stdout.
    """

    def pull(address: str, ref: str, ns: str, *extra: str) -> str:
        args = ("images", "pull", "--plain-http", "--snapshotter", "native", *extra, ref)
        res = py(address, *args, namespace=ns)
        assert res.returncode == 0, res.stderr.decode()
        return res.stdout.decode()

    return pull


@pytest.fixture
def shim_daemon() -> Iterator[Daemon]:
    """Our daemon with the runtime (real runc, our shim), for one test."""
    from pycontainerd.runtime.testing import require

    require("runc")
    with runtime_daemon("crt-") as d:
        yield d
