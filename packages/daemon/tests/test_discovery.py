"""Installing a distribution with a ``pycontainerd.plugins`` entry point is all it takes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pycontainerd.daemon.testing import MakeDaemon

pytestmark = pytest.mark.system

TESTS_DIR = Path(__file__).resolve().parent


def fake_distribution(site: Path) -> None:
    info = site / "pcd_fake_plugins-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pcd-fake-plugins\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pycontainerd.plugins]\nfake = pcd_daemon_fakedist\n")


def test_installed_distribution_appears_in_plugins_ls(
    make_daemon: MakeDaemon, short_dir: Path, env: dict[str, str]
) -> None:
    site = short_dir / "site"
    fake_distribution(site)
    env.pop("PYCONTAINERD_DISABLE_PLUGIN_AUTOLOAD")
    env["PYCONTAINERD_EXTRA_PLUGINS"] = ""
    with_dist = dict(env, PYTHONPATH=f"{site}:{TESTS_DIR}")
    d = make_daemon(name="with")
    d.env = with_dist
    d.start()
    listed = d.ctr("plugins", "ls").stdout
    assert re.search(r"^io\.containerd\.snapshotter\.v1\s+fakesnap\s", listed, re.M)
    assert re.search(r"^io\.containerd\.grpc\.v1\s+version\s", listed, re.M)  # the daemon's own
    assert d.stop() == 0

    d2 = make_daemon(name="without")
    d2.env = dict(env, PYTHONPATH=str(TESTS_DIR))
    d2.start()
    listed = d2.ctr("plugins", "ls").stdout
    assert "fakesnap" not in listed
    assert re.search(r"^io\.containerd\.grpc\.v1\s+version\s", listed, re.M)
