"""Plugins ask for each other through typed contracts, never by probing attributes.

``InitContext.get_single(type, Contract)`` (and its variants) checks an earlier
plugin's instance against a contract declared in core and names what is
missing. A plugin module that probes an instance with ``getattr``/``hasattr``
hides its real dependency; this test keeps that from coming back.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_MODULES = sorted((ROOT / "packages").glob("*/src/pycontainerd/*/plugin.py"))
PROBES = {"getattr", "hasattr"}


def test_plugin_modules_are_found() -> None:
    names = {p.parent.name for p in PLUGIN_MODULES}
    assert {"content", "metadata", "runtime", "snapshots", "daemon", "events"} <= names


def _probes(path: Path) -> list[str]:
    """``file:line: name(...)`` for each call of ``getattr``/``hasattr`` in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.name}:{node.lineno}: {node.func.id}(...)"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES
    ]


@pytest.mark.parametrize("path", PLUGIN_MODULES, ids=lambda p: p.parent.name)
def test_no_attribute_probing_in_plugin_modules(path: Path) -> None:
    found = _probes(path)
    assert not found, (
        f"{path.relative_to(ROOT)}: "
        "plugin modules ask InitContext for a contract "
        "(ic.get_single(PluginType.X, Contract)) instead of probing instances: " + "; ".join(found)
    )


def test_the_check_sees_a_probe(tmp_path: Path) -> None:
    path = tmp_path / "plugin.py"
    path.write_text(
        "def f(x: object) -> bool:\n"
        "    # getattr in a comment is no probe\n"
        "    return hasattr(x, 'publish') or callable(getattr(x, 'aclose', None))\n"
    )
    assert _probes(path) == ["plugin.py:3: hasattr(...)", "plugin.py:3: getattr(...)"]
