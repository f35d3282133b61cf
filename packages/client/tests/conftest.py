from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.remotes import mediatypes as mt
from pycontainerd.client.remotes.testing import (
    Blob,
    Image,
    Registry,
    require_registry,
    seeded_registry,
    sha256,
)
from pycontainerd.client.testing import RealContainerd
from pycontainerd.core import platforms
from pycontainerd.core.testing import STORE_PLUGINS, busybox_layer
from pycontainerd.daemon.testing import Daemon, daemon_env, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    with short_tempdir("pcl") as path:
        yield path


@pytest.fixture(scope="module")
def ours(module_dir: Path) -> Iterator[Daemon]:
    base = module_dir / "p"
    base.mkdir()
    with Daemon(base, env=daemon_env(STORE_PLUGINS)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def containerd(module_dir: Path) -> Iterator[RealContainerd]:
    base = module_dir / "g"
    base.mkdir()
    with RealContainerd(base) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def registry(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Registry]:
    """A docker-registry on 127.0.0.1 holding the test module's ``REGISTRY_IMAGES``.

    That is a mapping of ``"<repository>:<tag>"`` to the image to push there.
    """
    with seeded_registry(tmp_path_factory.mktemp("reg"), request.module.REGISTRY_IMAGES) as reg:
        yield reg


@pytest.fixture(params=["containerd", "ours"])
def address(request: pytest.FixtureRequest) -> str:
    """The address of each daemon in turn: containerd's, then ours."""
    daemon: RealContainerd | Daemon = request.getfixturevalue(request.param)
    return daemon.address


@pytest.fixture
def namespace() -> str:
    """A namespace of the test's own, so tests sharing a daemon do not see each other."""
    return f"t-{uuid.uuid4().hex[:12]}"


# -- a runnable image in a registry (the tutorial and the facade tests) --------------

APPLETS = ("sh", "echo", "cat", "sleep", "ls", "true", "id", "hostname")


def busybox_image() -> Image:
    """A one-layer OCI image for this host's platform; command ``/bin/sh``."""
    layer = busybox_layer(APPLETS)
    blob = Blob(mt.OCI_LAYER_GZIP, gzip.compress(layer, mtime=0))
    host = platforms.host()
    config = Blob(
        mt.OCI_CONFIG,
        json.dumps(
            {
                "architecture": host.architecture,
                "os": host.os,
                "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
            },
            sort_keys=True,
        ).encode(),
    )
    manifest = Blob(
        mt.OCI_MANIFEST,
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mt.OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [blob.descriptor()],
            },
            sort_keys=True,
        ).encode(),
    )
    return Image(root=manifest, blobs=[blob, config], diff_ids=[sha256(layer)])


@pytest.fixture(scope="module")
def image_ref() -> Iterator[str]:
    require_registry()
    if not Path("/bin/busybox").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail("/bin/busybox (busybox-static) is required under CI")
        pytest.skip("no /bin/busybox")
    with short_tempdir("prr") as base, Registry(base).running() as registry:
        yield registry.seed("library/busybox", "latest", busybox_image())
