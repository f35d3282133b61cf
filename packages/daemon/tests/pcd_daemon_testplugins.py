"""Plugins the daemon tests load through PYCONTAINERD_EXTRA_PLUGINS (not a test module)."""

from __future__ import annotations

import asyncio
import os

from pycontainerd.core.plugin import (
    InitContext,
    PluginType,
    Registration,
    SkipPluginError,
    hookimpl,
)


class _Thing:
    def __init__(self, name: str) -> None:
        self.name = name


async def _content(ic: InitContext) -> _Thing:
    ic.exports["root"] = str(ic.root)
    return _Thing("content")


async def _snap(ic: InitContext) -> _Thing:
    ic.exports["root"] = str(ic.root)
    ic.platforms.append("linux/amd64")
    return _Thing("testsnap")


async def _skipper(ic: InitContext) -> _Thing:
    ic.exports["root"] = str(ic.root)
    raise SkipPluginError("not on a skipfs filesystem")


async def _broken(ic: InitContext) -> _Thing:
    if os.environ.get("PCD_TEST_HANG"):  # a hung init, for the SIGTERM-during-start test
        await asyncio.Event().wait()
    raise RuntimeError("broken on purpose")


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    return [
        Registration(type=PluginType.CONTENT, id="content", init=_content),
        Registration(
            type=PluginType.SNAPSHOT, id="testsnap", init=_snap, requires=(PluginType.CONTENT,)
        ),
        Registration(type=PluginType.SNAPSHOT, id="skipper", init=_skipper),
        Registration(type=PluginType.INTERNAL, id="broken", init=_broken),
    ]
