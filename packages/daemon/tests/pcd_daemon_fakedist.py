"""The plugin module of the fake distribution the discovery test "installs"."""

from __future__ import annotations

from pycontainerd.core.plugin import InitContext, PluginType, Registration, hookimpl


async def _init(ic: InitContext) -> object:
    ic.exports["root"] = str(ic.root)
    return object()


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    return [Registration(type=PluginType.SNAPSHOT, id="fakesnap", init=_init)]
