"""The content plugin registrations and their layering."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pycontainerd.content import plugin as content_plugin
from pycontainerd.content.local import LocalStore
from pycontainerd.content.store import EventStore
from pycontainerd.core.plugin import InitContext, PluginType
from pycontainerd.events.exchange import Exchange

if TYPE_CHECKING:
    from pathlib import Path


def test_plugin_module_does_not_import_grpc() -> None:
    probe = (
        "import sys, pycontainerd.content.plugin; "
        "print(','.join(m for m in ('grpc', 'google.protobuf') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


async def test_registrations_compose(tmp_path: Path) -> None:
    regs = {r.uri: r for r in content_plugin.pycontainerd_plugins()}
    assert set(regs) == {
        "io.containerd.content.v1.content",
        "io.containerd.service.v1.content-service",
        "io.containerd.grpc.v1.content",
    }
    ic = InitContext(root=tmp_path / "io.containerd.content.v1.content", state=tmp_path, config={})
    local = await regs["io.containerd.content.v1.content"].init(ic)
    assert isinstance(local, LocalStore)
    assert ic.exports == {"root": str(tmp_path / "io.containerd.content.v1.content")}

    class Metadata:
        def content_store(self) -> LocalStore:
            assert isinstance(local, LocalStore)
            return local

    exchange = Exchange()
    ic2 = InitContext(
        root=tmp_path,
        state=tmp_path,
        config={},
        initialized={
            PluginType.METADATA: {"sqlite": Metadata()},
            PluginType.EVENT: {"exchange": exchange},
        },
    )
    service_store = await regs["io.containerd.service.v1.content-service"].init(ic2)
    assert isinstance(service_store, EventStore)
    assert service_store.store is local

    from pycontainerd.content.service import ContentService

    ic3 = InitContext(
        root=tmp_path,
        state=tmp_path,
        config={},
        initialized={PluginType.SERVICE: {"content-service": service_store}},
    )
    assert isinstance(await regs["io.containerd.grpc.v1.content"].init(ic3), ContentService)


async def test_metadata_without_content_store_is_an_error(tmp_path: Path) -> None:
    regs = {r.uri: r for r in content_plugin.pycontainerd_plugins()}
    ic = InitContext(
        root=tmp_path,
        state=tmp_path,
        config={},
        initialized={
            PluginType.METADATA: {"sqlite": object()},
            PluginType.EVENT: {"exchange": Exchange()},
        },
    )
    with pytest.raises(
        TypeError,
        match=r"plugin io\.containerd\.metadata\.v1\.sqlite does not implement "
        r"ContentStoreProvider: object lacks content_store\(\)",
    ):
        await regs["io.containerd.service.v1.content-service"].init(ic)
