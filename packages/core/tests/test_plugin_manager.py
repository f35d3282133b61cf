"""The plugin manager factory and the ``collect`` facade."""

from __future__ import annotations

import sys
import types
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import pluggy
import pytest

from pycontainerd.core.plugin import (
    DISABLE_AUTOLOAD_ENV,
    ENTRY_POINT_GROUP,
    InitContext,
    PluginType,
    Registration,
    collect,
    hookimpl,
    hookspec,
    make_plugin_manager,
)

if TYPE_CHECKING:
    import os


async def _init(ic: InitContext) -> object:
    return ic


class ContentPlugin:
    @hookimpl
    def pycontainerd_plugins(self) -> list[Registration]:
        return [Registration(type=PluginType.CONTENT, id="content", init=_init)]


class TwoPlugins:
    @hookimpl
    def pycontainerd_plugins(self) -> list[Registration]:
        return [
            Registration(type=PluginType.SNAPSHOT, id="native", init=_init),
            Registration(
                type=PluginType.GRPC, id="snapshots", init=_init, requires=(PluginType.SNAPSHOT,)
            ),
        ]


def test_collect_flattens_all_modules() -> None:
    pm = make_plugin_manager(autoload=False)
    pm.register(ContentPlugin(), name="content")
    pm.register(TwoPlugins(), name="snapshots")
    assert sorted(r.uri for r in collect(pm)) == [
        "io.containerd.content.v1.content",
        "io.containerd.grpc.v1.snapshots",
        "io.containerd.snapshotter.v1.native",
    ]


def test_collect_empty_manager() -> None:
    assert collect(make_plugin_manager(autoload=False)) == []


def test_collect_rejects_non_registrations() -> None:
    class Bad:
        @hookimpl
        def pycontainerd_plugins(self) -> list[object]:
            return ["io.containerd.content.v1.content"]

    pm = make_plugin_manager(autoload=False)
    pm.register(Bad(), name="bad")
    with pytest.raises(TypeError, match="returned str, not a Registration"):
        collect(pm)


def test_blocked_name_is_not_registered() -> None:
    pm = make_plugin_manager(autoload=False, blocked=["content"])
    assert pm.register(ContentPlugin(), name="content") is None
    assert pm.is_blocked("content")
    assert collect(pm) == []


class _SubsystemSpecs:
    """A subsystem's hookspecs, added through pycontainerd_addhooks."""

    @hookspec(firstresult=True)
    def pycontainerd_test_answer(self) -> int | None:
        raise NotImplementedError


class Subsystem:
    @hookimpl
    def pycontainerd_addhooks(self, pluginmanager: pluggy.PluginManager) -> None:
        pluginmanager.add_hookspecs(_SubsystemSpecs)

    @hookimpl
    def pycontainerd_test_answer(self) -> int | None:
        return 42


def test_addhooks_is_historic() -> None:
    pm = make_plugin_manager(autoload=False)
    pm.register(Subsystem(), name="subsystem")
    pm.check_pending()
    assert pm.hook.pycontainerd_test_answer() == 42


def test_unknown_hook_fails_check_pending() -> None:
    class Misspelt:
        @hookimpl
        def pycontainerd_plugin(self) -> list[Registration]:
            return []

    pm = make_plugin_manager(autoload=False)
    pm.register(Misspelt(), name="misspelt")
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'pycontainerd_plugin'"):
        pm.check_pending()


# --- entry-point loading, with a fake distribution --------------------------------

_MODULE = "pycontainerd_core_test_entrypoint_plugin"


class _FakeDist(metadata.Distribution):
    def read_text(self, filename: str) -> str | None:
        if filename == "METADATA":
            return "Metadata-Version: 2.1\nName: fake-plugin\nVersion: 1.0\n"
        if filename == "entry_points.txt":
            return f"[{ENTRY_POINT_GROUP}]\nfake = {_MODULE}\n"
        return None

    def locate_file(self, path: str | os.PathLike[str]) -> Path:
        return Path(path)


@pytest.fixture
def fake_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the fake distribution the only installed one, for pluggy's loader."""
    module = types.ModuleType(_MODULE)

    @hookimpl
    def pycontainerd_plugins() -> list[Registration]:
        return [Registration(type=PluginType.DIFF, id="fake", init=_init)]

    module.pycontainerd_plugins = pycontainerd_plugins  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, _MODULE, module)
    monkeypatch.setattr(metadata, "distributions", lambda **_: [_FakeDist()])


@pytest.mark.usefixtures("fake_entry_point")
def test_autoload_loads_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    pm = make_plugin_manager()
    assert pm.has_plugin("fake")
    assert "io.containerd.differ.v1.fake" in [r.uri for r in collect(pm)]


@pytest.mark.usefixtures("fake_entry_point")
def test_autoload_blocked_by_entry_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    pm = make_plugin_manager(blocked=["fake"])
    assert not pm.has_plugin("fake")
    assert "io.containerd.differ.v1.fake" not in [r.uri for r in collect(pm)]


@pytest.mark.usefixtures("fake_entry_point")
def test_autoload_disabled_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    pm = make_plugin_manager()
    assert not pm.has_plugin("fake")


@pytest.mark.usefixtures("fake_entry_point")
def test_autoload_false_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    assert not make_plugin_manager(autoload=False).has_plugin("fake")
