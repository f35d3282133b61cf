"""The monorepo's shape: one distribution per directory, lockstep versions, PEP 420.

These read the checkout's files only, so they also run under Pants (its BUILD
files provide the files as dependencies).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALL_DIRS = sorted(p.parent for p in (ROOT / "packages").glob("*/pyproject.toml"))
META = "pycontainerd"
"""The meta-distribution: dependencies only, no package of its own."""
PACKAGE_DIRS = [p for p in ALL_DIRS if p.name != META]
EXPECTED = {
    "core", "config", "api", "events", "content", "snapshots", "snapshots-btrfs",
    "metadata", "runtime", "daemon", "remotes", "transfer", "client", "ctr", "cri",
}  # fmt: skip


def _pyproject(path: Path) -> dict[str, object]:
    return tomllib.loads(path.read_text())


def _project(package_dir: Path) -> dict[str, object]:
    project = _pyproject(package_dir / "pyproject.toml")["project"]
    assert isinstance(project, dict)
    return project


def test_every_distribution_exists() -> None:
    assert {p.name for p in PACKAGE_DIRS} == EXPECTED
    assert {p.name for p in ALL_DIRS} == {*EXPECTED, META}


def test_meta_distribution_ships_nothing_but_metadata() -> None:
    meta = ROOT / "packages" / META
    data = _pyproject(meta / "pyproject.toml")
    project = data["project"]
    assert isinstance(project, dict)
    assert project["name"] == META
    assert (meta / "README.md").is_file()
    assert not (meta / "src").exists()
    tool = data["tool"]
    assert isinstance(tool, dict)
    assert tool["hatch"]["build"]["targets"]["wheel"] == {"bypass-selection": True}
    assert "python_distribution(" in (meta / "BUILD").read_text()
    assert "pycontainerd_tests(" in (meta / "tests" / "BUILD").read_text()
    assert list((meta / "tests").glob("test_*.py"))


@pytest.mark.parametrize("package_dir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_package_has_the_standard_files(package_dir: Path) -> None:
    name = package_dir.name.replace("-", "_")
    for required in ("README.md", "pyproject.toml", f"src/pycontainerd/{name}/py.typed"):
        assert (package_dir / required).is_file(), f"{package_dir.name} lacks {required}"
    # PEP 420: the namespace level holds only this distribution's package.
    assert sorted(p.name for p in (package_dir / "src" / "pycontainerd").iterdir()) == [name]
    assert _project(package_dir)["name"] == f"pycontainerd-{package_dir.name}"


@pytest.mark.parametrize("package_dir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_package_has_tests(package_dir: Path) -> None:
    tests = list((package_dir / "tests").glob("**/test_*.py"))
    assert tests, f"{package_dir.name}/tests has no test_*.py"


@pytest.mark.parametrize("package_dir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_package_builds_with_hatchling_from_src(package_dir: Path) -> None:
    data = _pyproject(package_dir / "pyproject.toml")
    assert data["build-system"] == {
        "requires": ["hatchling>=1.25"],
        "build-backend": "hatchling.build",
    }
    tool = data["tool"]
    assert isinstance(tool, dict)
    assert tool["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/pycontainerd"]
    assert tool["hatch"]["build"]["dev-mode-dirs"] == ["src"]


def test_versions_are_in_lockstep() -> None:
    versions = {p.name: _project(p)["version"] for p in ALL_DIRS}
    root_version = _project(ROOT)["version"]
    assert set(versions.values()) == {root_version}, versions


def test_no_namespace_init_anywhere() -> None:
    offenders = [
        str(p.relative_to(ROOT))
        for p in ROOT.glob("packages/**/pycontainerd/__init__.py")
        if ".venv" not in p.parts
    ]
    assert offenders == []


def test_mypy_path_lists_every_src_dir() -> None:
    mypy = _pyproject(ROOT / "pyproject.toml")["tool"]
    assert isinstance(mypy, dict)
    mypy_path = set(mypy["mypy"]["mypy_path"])
    assert mypy_path == {f"packages/{p.name}/src" for p in PACKAGE_DIRS}


def test_pants_workspace_lists_every_src_dir() -> None:
    # Under Pants every test depends on //:workspace: a distribution missing
    # from it is invisible to the daemons, shims and ctr the tests start.
    build = (ROOT / "BUILD").read_text()
    workspace = build[build.index('name="workspace"') :]
    workspace = workspace[: workspace.index(")")]
    listed = set(re.findall(r'"packages/([a-z-]+)/src:src"', workspace))
    assert listed == {p.name for p in PACKAGE_DIRS}


def test_sibling_dependencies_come_from_the_workspace() -> None:
    # Every pycontainerd-* requirement must be resolved from disk by uv.
    for package_dir in ALL_DIRS:
        data = _pyproject(package_dir / "pyproject.toml")
        project = _project(package_dir)
        deps = list(project.get("dependencies", []))  # type: ignore[call-overload]
        for extra in dict(project.get("optional-dependencies", {})).values():  # type: ignore[call-overload]
            deps.extend(extra)
        siblings = {m.group(0) for d in deps if (m := re.match(r"pycontainerd-[a-z-]+[a-z]", d))}
        tool = data.get("tool", {})
        assert isinstance(tool, dict)
        sources = tool.get("uv", {}).get("sources", {})
        for sibling in siblings:
            assert sources.get(sibling) == {"workspace": True}, (package_dir.name, sibling)


def test_pants_build_files_use_the_generic_macros() -> None:
    # Generic recursive globs: new modules and tests need no BUILD edits.
    for package_dir in PACKAGE_DIRS:
        for build, macro in (
            ("BUILD", "pycontainerd_distribution()"),
            ("src/BUILD", "pycontainerd_sources()"),
            ("tests/BUILD", "pycontainerd_tests("),
        ):
            path = package_dir / build
            assert path.is_file(), f"{package_dir.name} lacks {build}"
            assert macro in path.read_text(), f"{package_dir.name}/{build} lacks {macro}"
    assert "python_tests(" in (ROOT / "tests" / "BUILD").read_text()
