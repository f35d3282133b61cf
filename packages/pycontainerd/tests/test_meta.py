"""The meta-distribution installs the usual set and nothing of its own."""

from __future__ import annotations

import tomllib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def test_depends_on_the_standard_daemon_ctr_and_client() -> None:
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    assert project["name"] == "pycontainerd"
    assert sorted(project["dependencies"]) == [
        "pycontainerd-client",
        "pycontainerd-ctr",
        "pycontainerd-daemon[standard]",
    ]
    daemon = tomllib.loads((PACKAGE.parent / "daemon" / "pyproject.toml").read_text())["project"]
    standard = set(daemon["optional-dependencies"]["standard"])
    # Every subsystem distribution with plugins is in the standard set, except
    # the optional btrfs snapshotter (its own extra).
    subsystems = {
        f"pycontainerd-{p.name}"
        for p in PACKAGE.parent.iterdir()
        if (p / "pyproject.toml").is_file()
        and "pycontainerd.plugins" in (p / "pyproject.toml").read_text()
        and p.name not in {"daemon", "snapshots-btrfs"}
    }
    assert subsystems <= standard
    assert daemon["optional-dependencies"]["btrfs"] == ["pycontainerd-snapshots-btrfs"]


def test_ships_no_code() -> None:
    assert not (PACKAGE / "src").exists()
