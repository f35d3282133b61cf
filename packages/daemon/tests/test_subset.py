"""A daemon serves the subsystems it has: an absent one is containerd's absent plugin.

The daemon loads only the plugin modules it is given (entry-point autoload
off), as if only those distributions were installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.daemon.missing import install_hint, provider
from pycontainerd.daemon.testing import Daemon, daemon_env

if TYPE_CHECKING:
    from pathlib import Path

# Everything but the runtime: an image box.
IMAGE_BOX = (
    "pycontainerd.daemon.plugin",
    "pycontainerd.events.plugin",
    "pycontainerd.content.plugin",
    "pycontainerd.snapshots.plugin",
    "pycontainerd.metadata.plugin",
)


def test_install_hint_names_the_distribution() -> None:
    assert provider("io.containerd.grpc.v1.tasks") == "pycontainerd-runtime"
    assert provider("io.containerd.snapshotter.v1.btrfs") == "pycontainerd-snapshots-btrfs"
    assert provider("io.containerd.snapshotter.v1.overlayfs") == "pycontainerd-snapshots"
    assert provider("io.containerd.gc.v1.scheduler") == "pycontainerd-metadata"
    assert provider("io.example.v1.thing") == ""
    assert install_hint(["io.containerd.grpc.v1.tasks"]) == (
        "install pycontainerd-runtime (or 'pycontainerd-daemon[standard]' for the standard set)"
    )
    assert install_hint(["io.containerd.snapshotter.v1.btrfs"]) == (
        "install pycontainerd-snapshots-btrfs"
    )
    hint = install_hint(["io.example.v1.thing", "io.containerd.grpc.v1.images"])
    assert hint.startswith("install pycontainerd-metadata (or ")
    assert "no known distribution provides io.example.v1.thing" in hint


@pytest.mark.system
def test_without_runtime_tasks_is_an_unknown_service(short_dir: Path) -> None:
    with Daemon(short_dir, env=daemon_env(IMAGE_BOX)) as d:
        rows = {tuple(line.split()[:2]) for line in d.ctr("plugins", "ls").stdout.splitlines()}
        assert ("io.containerd.grpc.v1", "images") in rows
        assert ("io.containerd.grpc.v1", "tasks") not in rows
        assert not [r for r in rows if r[0].startswith("io.containerd.runtime.")]
        res = d.ctr("tasks", "ls", check=False)
        assert res.returncode == 1
        # containerd's answer for a service no plugin registered (code 12).
        assert "unknown service containerd.services.tasks.v1.Tasks" in res.stderr
        assert d.ctr("images", "ls", "-q").returncode == 0


@pytest.mark.system
def test_required_but_absent_plugin_names_what_to_install(short_dir: Path) -> None:
    config = 'version = 2\nrequired_plugins = ["io.containerd.grpc.v1.tasks"]\n'
    d = Daemon(short_dir, config=config, env=daemon_env(IMAGE_BOX)).start(wait=False)
    try:
        assert d.proc is not None
        assert d.proc.wait(60) == 1
        assert (
            "containerd: required plugin [io.containerd.grpc.v1.tasks] not included: "
            "install pycontainerd-runtime (or 'pycontainerd-daemon[standard]'"
        ) in d.log()
    finally:
        d.kill()
