"""Every hook is documented: a docstring on its spec and an entry in docs/hooks.md.

The plugin manager is built the way the daemon builds it (core hookspecs, the
historic ``pycontainerd_addhooks`` call, every installed plugin module), so a
subsystem's own hookspecs are included as soon as its plugin module adds them.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy
import pytest

from pycontainerd.core.plugin import ENTRY_POINT_GROUP, PROJECT
from pycontainerd.core.plugin import hookspecs as core_hookspecs

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "hooks.md"
HEADING = re.compile(r"^### `(?P<sig>(?P<name>pycontainerd_\w+)\(.*)`$", re.MULTILINE)


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(core_hookspecs)
    pm.hook.pycontainerd_addhooks.call_historic(kwargs={"pluginmanager": pm})
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def _specs() -> dict[str, Callable[..., object]]:
    """Specs the plugin manager knows, plus those of every ``pycontainerd.<x>.hookspecs``.

    The modules are scanned too because, without installed distributions (under
    Pants), entry points, and so the subsystems' ``pycontainerd_addhooks``, are absent.
    """
    pm = _plugin_manager()
    specs: dict[str, Callable[..., object]] = {}
    for name in dir(pm.hook):
        caller = getattr(pm.hook, name)
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None:
            specs[name] = caller.spec.function
    namespace = importlib.import_module("pycontainerd")
    for info in pkgutil.iter_modules(namespace.__path__):
        module_name = f"pycontainerd.{info.name}.hookspecs"
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        for name in dir(module):
            function = getattr(module, name)
            if callable(function) and hasattr(function, f"{PROJECT}_spec"):
                specs.setdefault(name, function)
    return specs


def signature(function: Callable[..., object]) -> str:
    """``name(arg: Type, ...) -> Return`` exactly as annotated in the source."""
    annotations = dict(function.__annotations__)
    returns = annotations.pop("return", "None")
    params = ", ".join(f"{arg}: {ann}" for arg, ann in annotations.items())
    return f"{function.__name__}({params}) -> {returns}"


def _documented() -> dict[str, str]:
    return {m["name"]: m["sig"] for m in HEADING.finditer(DOCS.read_text())}


SPECS = _specs()


def test_core_hooks_are_found() -> None:
    assert {"pycontainerd_plugins", "pycontainerd_addhooks"} <= SPECS.keys()


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_has_a_docstring(name: str) -> None:
    doc = SPECS[name].__doc__ or ""
    assert len(doc.strip()) > 20, f"{name} needs a docstring stating its call semantics"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_hook_is_in_docs_with_its_signature(name: str) -> None:
    documented = _documented()
    assert name in documented, f"docs/hooks.md has no '### `{signature(SPECS[name])}`'"
    assert documented[name] == signature(SPECS[name])


def test_docs_list_no_unknown_hooks() -> None:
    assert sorted(_documented().keys() - SPECS.keys()) == []


def test_every_hookspecs_module_is_added() -> None:
    # A subsystem's pycontainerd/<x>/hookspecs.py only takes effect when its
    # plugin module adds it in pycontainerd_addhooks.
    modules = {ep.value.rpartition(".")[0] for ep in entry_points(group=ENTRY_POINT_GROUP)}
    for package in sorted(modules):
        name = f"{package}.hookspecs"
        if importlib.util.find_spec(name) is None:
            continue
        module = importlib.import_module(name)
        declared = {n for n in dir(module) if n.startswith("pycontainerd_")}
        missing = declared - SPECS.keys()
        assert missing == set(), f"{name} declares {missing} but they are never added"


def test_signature_format() -> None:
    assert signature(core_hookspecs.pycontainerd_addhooks) == (
        "pycontainerd_addhooks(pluginmanager: pluggy.PluginManager) -> None"
    )
