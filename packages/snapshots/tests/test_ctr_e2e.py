"""The Go ``ctr snapshots`` commands against our daemon (content, events, metadata, snapshots)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.testing import STORE_PLUGINS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycontainerd.daemon.testing import Daemon

MODULES = STORE_PLUGINS

pytestmark = [pytest.mark.system, pytest.mark.usefixtures("needs_root")]

# Go ctr labels what `snapshots prepare` and `commit` create with
# containerd.io/gc.root, but not a `snapshots view`, and it has no lease flag:
# the view is garbage as soon as it exists (in containerd too), and the commit's
# removal of the active key makes the next GC tick collect it. The first
# collection is put off for the test's length so the commands see what they made.
CONFIG = """\
version = 2

[plugins."io.containerd.gc.v1.scheduler"]
  startup_delay = "1h"
"""


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    testing = pytest.importorskip("pycontainerd.daemon.testing")
    testing.require_binary("/usr/bin/ctr")
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="sn-e2e-"))
    d = testing.Daemon(base, config=CONFIG, env=testing.daemon_env(MODULES))
    try:
        d.start()
        yield d
    finally:
        d.kill()
        shutil.rmtree(base, ignore_errors=True)


def test_ctr_snapshots_commands(daemon: Daemon, tmp_path: Path) -> None:
    plugins = daemon.ctr("plugins", "ls").stdout
    for line in ("overlayfs", "walking", "snapshots"):
        assert line in plugins
    daemon.ctr("snapshots", "prepare", "work", "")
    mounts = daemon.ctr("snapshots", "mounts", str(tmp_path / "m"), "work").stdout
    assert mounts.startswith("mount -t bind ")
    assert "io.containerd.snapshotter.v1.overlayfs/snapshots/" in mounts
    daemon.ctr("snapshots", "commit", "base", "work")
    daemon.ctr("snapshots", "view", "look", "base")
    daemon.ctr("snapshots", "label", "base", "team=a")
    info = daemon.ctr("snapshots", "info", "base").stdout
    assert '"Kind": "Committed"' in info
    assert '"team": "a"' in info
    assert "look" in daemon.ctr("snapshots", "tree").stdout
    assert "base" in daemon.ctr("snapshots", "usage").stdout
    failed = daemon.ctr("snapshots", "rm", "base", check=False)
    assert failed.returncode != 0
    daemon.ctr("snapshots", "rm", "look")
    listing = daemon.ctr("snapshots", "ls").stdout.splitlines()
    assert [line.split()[0] for line in listing[1:]] == ["base"]
