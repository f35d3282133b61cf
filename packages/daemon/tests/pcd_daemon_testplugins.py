"""Plugins the daemon tests load through PYCONTAINERD_EXTRA_PLUGINS (not a test module)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

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


class _SlowService:
    """``/pcd.test.Slow/Sleep``: raw bytes in and out; sleeps, then answers ``done``.

    Writes ``$PCD_TEST_MARKER`` when a call starts, so a test knows it is in flight.
    """

    def register(self, server: Any) -> None:
        import grpc

        async def sleep(request: bytes, context: Any) -> bytes:
            marker = os.environ.get("PCD_TEST_MARKER")
            if marker:
                Path(marker).touch()  # noqa: ASYNC240 - a test marker, instant
            await asyncio.sleep(float(request.decode() or "1"))
            return b"done"

        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(sleep)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("pcd.test.Slow", {"Sleep": handler}),)
        )


async def _slow(ic: InitContext) -> _SlowService:
    return _SlowService()


@hookimpl
def pycontainerd_plugins() -> list[Registration]:
    return [
        Registration(type=PluginType.CONTENT, id="content", init=_content),
        Registration(
            type=PluginType.SNAPSHOT, id="testsnap", init=_snap, requires=(PluginType.CONTENT,)
        ),
        Registration(type=PluginType.SNAPSHOT, id="skipper", init=_skipper),
        Registration(type=PluginType.INTERNAL, id="broken", init=_broken),
        Registration(type=PluginType.GRPC, id="slow", init=_slow),
    ]
