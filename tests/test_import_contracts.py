"""The README's "may import" table, enforced: import-linter's contracts in ``.importlinter``.

``lint-imports`` builds the import graph of every ``pycontainerd.*`` package,
counting function-local and ``TYPE_CHECKING`` imports, and checks the layers,
one forbidden-imports contract per row of the table, and that no package has
an import cycle. This test runs it (so ``make test`` and CI fail on a
violation), shows that a planted bad import and a planted cycle break it, and
keeps the table in the README and in docs/architecture.md equal to the
contracts.
"""

from __future__ import annotations

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
PACKAGES = (
    "core", "config", "api", "events", "content", "snapshots", "snapshots_btrfs", "metadata",
    "runtime", "remotes", "transfer", "daemon", "client", "ctr", "cri",
)  # fmt: skip

LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True))"
)


def lint(config: Path, *, python_path: str = "") -> subprocess.CompletedProcess[str]:
    """``lint-imports --config <config> --no-cache`` in a fresh interpreter."""
    env = dict(os.environ)
    if python_path:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [python_path, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", LINT, str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_the_import_contracts_hold() -> None:
    res = lint(CONFIG)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_a_planted_bad_import_and_cycle_break_the_contracts(tmp_path: Path) -> None:
    """A copy of core, first on the path, with a function-local upward import and a cycle."""
    spec = importlib.util.find_spec("pycontainerd.core")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    core = tmp_path / "pycontainerd" / "core"
    shutil.copytree(next(iter(spec.submodule_search_locations)), core)
    (core / "planted.py").write_text(
        "def lazy() -> object:\n"
        "    from pycontainerd.metadata import db  # function-local: counted too\n"
        "\n"
        "    return db\n"
    )
    (core / "cycle_a.py").write_text(
        "def later() -> object:\n    from pycontainerd.core import cycle_b\n\n    return cycle_b\n"
    )
    (core / "cycle_b.py").write_text("from pycontainerd.core import cycle_a\n")
    res = lint(CONFIG, python_path=str(tmp_path))
    assert res.returncode != 0
    out = " ".join(res.stdout.split())
    assert "core may import pluggy only BROKEN" in out
    assert "pycontainerd.core.planted -> pycontainerd.metadata.db" in out
    assert "dependencies point down BROKEN" in out
    assert "no import cycles inside a package BROKEN" in out
    assert "No cycles are allowed in pycontainerd.core" in out
    # without the planted modules the same copy passes: the plants broke it
    for name in ("planted.py", "cycle_a.py", "cycle_b.py"):
        (core / name).unlink()
    assert lint(CONFIG, python_path=str(tmp_path)).returncode == 0


def _contracts() -> dict[str, set[str]]:
    """Package -> what its forbidden contract allows among the pycontainerd packages."""
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    allowed: dict[str, set[str]] = {}
    for section in parser.sections():
        fields = parser[section]
        if fields.get("type") != "forbidden":
            continue
        source = fields["source_modules"].strip().removeprefix("pycontainerd.")
        forbidden = {
            m.strip().removeprefix("pycontainerd.")
            for m in fields["forbidden_modules"].split()
            if m.startswith("pycontainerd.")
        }
        allowed[source] = set(PACKAGES) - forbidden - {source}
    return allowed


def _table(text: str, column: int) -> dict[str, set[str]]:
    """Package -> the pycontainerd packages its "may import" cell names."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) <= column or not line.startswith("|"):
            continue
        name = cells[0].strip("`").removeprefix("packages/").replace("-", "_")
        if name not in PACKAGES:
            continue
        cell = re.split(r"—|\(", cells[column])[0]
        if "everything" in cell:
            out[name] = {"everything"}
            continue
        words = {w.strip().replace("-", "_") for w in cell.split(",")}
        out[name] = {w for w in words if w in PACKAGES}
    return out


def _expected() -> dict[str, set[str]]:
    allowed = _contracts()
    assert set(allowed) == set(PACKAGES), "one forbidden contract per package"
    # the daemon may import everything but the client side
    assert allowed["daemon"] == set(PACKAGES) - {"daemon", "client", "ctr"}
    return {**allowed, "daemon": {"everything"}}


@pytest.mark.parametrize(("doc", "column"), [("README.md", 3), ("docs/architecture.md", 1)])
def test_the_tables_say_what_the_contracts_check(doc: str, column: int) -> None:
    table = _table((ROOT / doc).read_text(), column)
    assert table == _expected()


def _imported_packages() -> dict[str, set[str]]:
    """Package -> the other pycontainerd packages it imports (any import, any depth)."""
    import grimp

    graph = grimp.build_graph(*(f"pycontainerd.{p}" for p in PACKAGES), cache_dir=None)
    return {
        p: {
            q
            for q in PACKAGES
            if q != p
            and graph.direct_import_exists(
                importer=f"pycontainerd.{p}", imported=f"pycontainerd.{q}", as_packages=True
            )
        }
        for p in PACKAGES
    }


def _requirements(project: dict[str, object]) -> set[str]:
    deps = project.get("dependencies", [])
    assert isinstance(deps, list)
    return {
        m.group(1).replace("-", "_")
        for d in deps
        if (m := re.match(r"pycontainerd-([a-z-]+[a-z])", d))
    }


def test_every_dependency_is_imported_or_declared_for_plugin_order() -> None:
    """A sibling dependency is imported, or listed in ``[tool.pycontainerd] plugin-order-only``.

    The list names what a distribution depends on only so that the plugins
    its plugins require are installed; nothing on it may be imported (then it
    is an ordinary dependency), and every import needs a declared dependency.
    """
    import tomllib

    imported = _imported_packages()
    for package in PACKAGES:
        data = tomllib.loads(
            (ROOT / "packages" / package.replace("_", "-") / "pyproject.toml").read_text()
        )
        declared = _requirements(data["project"])
        order_only = {
            d.removeprefix("pycontainerd-").replace("-", "_")
            for d in data.get("tool", {}).get("pycontainerd", {}).get("plugin-order-only", [])
        }
        where = f"packages/{package.replace('_', '-')}/pyproject.toml"
        assert imported[package] <= declared, f"{where}: imports undeclared {imported[package]}"
        assert order_only <= declared, f"{where}: plugin-order-only names no dependency"
        assert not order_only & imported[package], f"{where}: imports a plugin-order-only one"
        if package != "daemon":  # its plugin distributions are extras, none imported
            assert declared == imported[package] | order_only, (
                f"{where}: {declared - imported[package] - order_only} neither imported "
                "nor declared plugin-order-only"
            )
