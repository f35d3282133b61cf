"""docs/architecture.md stays true: every path it names exists, every plugin is indexed.

Paths are the backticked tokens that start with a top-level directory of the
repository (``packages/...``, ``tests/...``, ``tools/...``) and the targets of
relative Markdown links. The plugin index is compared with the registrations
the daemon would compose: each distribution's ``pycontainerd.plugins`` entry
points (read from its ``pyproject.toml``, so the check does not depend on what
is installed), loaded into a plugin manager as the daemon loads them.

Under Pants the sandbox lacks the doc, so these tests need a full checkout.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from pycontainerd.daemon.plugins import collect, make_manager

DOC = Path("docs") / "architecture.md"
TOP_DIRS = ("packages", "tests", "tools", "docs", "bench", "pants-plugins", "3rdparty")
BACKTICKED = re.compile(r"`((?:" + "|".join(map(re.escape, TOP_DIRS)) + r")/[^`\s]*)`")
LINK = re.compile(r"\]\(([^)#\s:]+)(?:#[^)]*)?\)")
INDEX_ROW = re.compile(
    r"^\|\s*`([a-z0-9.-]+\.v\d+\.[^`]+)`\s*\|\s*`([^`]+)`\s*\|\s*$", re.MULTILINE
)


def missing_paths(root: Path, doc: Path) -> list[str]:
    """The paths ``doc`` names that do not exist (under ``root``; links: beside ``doc``)."""
    text = doc.read_text()
    missing = [p for p in BACKTICKED.findall(text) if not (root / p).exists()]
    missing += [link for link in LINK.findall(text) if not (doc.parent / link).resolve().exists()]
    return missing


def plugin_index(doc: Path) -> dict[str, str]:
    """The doc's plugin index: URI -> the module path it names."""
    return dict(INDEX_ROW.findall(doc.read_text()))


def registered_plugins(root: Path) -> dict[str, str]:
    """Every plugin URI the workspace's plugin modules register -> that module's path."""
    modules: dict[str, str] = {}
    for pyproject in sorted(root.glob("packages/*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        for module in project.get("entry-points", {}).get("pycontainerd.plugins", {}).values():
            src = pyproject.parent / "src" / (module.replace(".", "/") + ".py")
            modules[module] = src.relative_to(root).as_posix()
    out: dict[str, str] = {}
    for module, path in modules.items():
        for reg in collect(make_manager(autoload=False, modules=[module])):
            out[reg.uri] = path
    # all together, as the daemon composes them (collect refuses a URI registered twice)
    together = collect(make_manager(autoload=False, modules=sorted(modules)))
    assert {r.uri for r in together} == set(out)
    return out


def test_every_path_exists(full_checkout: Path) -> None:
    doc = full_checkout / DOC
    assert BACKTICKED.findall(doc.read_text()), "the doc names no repository path"
    missing = missing_paths(full_checkout, doc)
    assert not missing, f"{DOC} names paths that do not exist: {missing}"


def test_every_registered_plugin_is_indexed(full_checkout: Path) -> None:
    registered = registered_plugins(full_checkout)
    assert "io.containerd.metadata.v1.sqlite" in registered
    index = plugin_index(full_checkout / DOC)
    unindexed = sorted(set(registered) - set(index))
    assert not unindexed, f"{DOC}'s plugin index lacks {unindexed}"
    wrong = {uri: (index[uri], path) for uri, path in registered.items() if index[uri] != path}
    assert not wrong, f"{DOC}'s plugin index names the wrong module (doc, code): {wrong}"
    stale = sorted(set(index) - set(registered))
    assert not stale, f"{DOC}'s plugin index lists plugins nothing registers: {stale}"


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("`packages/core/pyproject.toml` and `tools/setup.sh`", []),
        (
            "see `packages/core/src/pycontainerd/core/nothere.py`",
            ["packages/core/src/pycontainerd/core/nothere.py"],
        ),
        ("[hooks](hooks.md), [gone](gone.md#x), [web](https://example.invalid/a)", ["gone.md"]),
        ("`io.containerd.grpc.v1.tasks` and `ctr run` are no paths", []),
    ],
)
def test_the_check_sees_a_wrong_path(
    full_checkout: Path, tmp_path: Path, text: str, missing: list[str]
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hooks.md").write_text("")
    doc = docs / "architecture.md"
    doc.write_text(text + "\n")
    assert missing_paths(full_checkout, doc) == missing


def test_the_index_is_read_from_its_table(tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    doc.write_text(
        "| plugin URI | registered in |\n|---|---|\n"
        "| `io.containerd.grpc.v1.tasks` | `packages/runtime/src/x.py` |\n"
        "mentions `io.containerd.grpc.v1.images` outside the table\n"
    )
    assert plugin_index(doc) == {"io.containerd.grpc.v1.tasks": "packages/runtime/src/x.py"}
