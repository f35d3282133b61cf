"""The plugin module: registrations, init with real neighbours, and import weight."""

from __future__ import annotations

import subprocess
import sys
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.core import containers, content, images, leases, snapshots
from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.core.plugin import GrpcService, InitContext, PluginType
from pycontainerd.events.exchange import Exchange
from pycontainerd.metadata import plugin
from pycontainerd.metadata.metadata import Metadata
from pycontainerd.snapshots.native import NativeSnapshotter

if TYPE_CHECKING:
    from pathlib import Path


def test_registrations() -> None:
    regs = plugin.pycontainerd_plugins()
    assert [r.uri for r in regs] == [
        "io.containerd.metadata.v1.sqlite",
        "io.containerd.gc.v1.scheduler",
        "io.containerd.grpc.v1.namespaces",
        "io.containerd.grpc.v1.images",
        "io.containerd.grpc.v1.containers",
        "io.containerd.grpc.v1.leases",
        "io.containerd.sandbox.store.v1.local",
        "io.containerd.grpc.v1.sandboxes",
    ]
    assert regs[0].requires == (PluginType.CONTENT, PluginType.SNAPSHOT)
    assert dict(regs[0].config) == {"content_sharing_policy": "shared"}


async def test_init_metadata_and_services(tmp_path: Path) -> None:
    regs = {r.id: r for r in plugin.pycontainerd_plugins()}
    store = LocalStore(tmp_path / "content")
    root = tmp_path / "root" / "io.containerd.metadata.v1.sqlite"
    ic = InitContext(
        root=root,
        state=tmp_path / "state",
        config={"content_sharing_policy": "shared"},
        initialized={PluginType.CONTENT: {"content": store}},
    )
    md = await regs["sqlite"].init(ic)
    assert isinstance(md, Metadata)
    try:
        assert ic.exports == {"path": str(root / "meta.db"), "policy": "shared"}
        assert (root / "meta.db").is_file()
        assert isinstance(md.content_store(), content.Store)
        assert isinstance(md.image_store(), images.Store)
        assert isinstance(md.container_store(), containers.Store)
        assert isinstance(md.lease_store(), leases.Manager)

        exchange = Exchange()
        svc_ic = InitContext(
            root=tmp_path,
            state=tmp_path,
            config={},
            initialized={
                PluginType.METADATA: {"sqlite": md},
                PluginType.EVENT: {"exchange": exchange},
            },
        )
        server = grpc.aio.server()
        for name in ("namespaces", "images", "containers", "leases"):
            svc = await regs[name].init(svc_ic)
            assert isinstance(svc, GrpcService)
            svc.register(server)
        await server.stop(None)
        await exchange.aclose()
    finally:
        await md.aclose()


async def test_metadata_hands_out_one_namespaced_snapshotter_per_backend(tmp_path: Path) -> None:
    native = NativeSnapshotter(tmp_path / "native")
    md = Metadata(
        tmp_path / "meta.db",
        LocalStore(tmp_path / "content"),
        snapshotters={"native": native, "odd": object()},
    )
    try:
        assert isinstance(md, snapshots.SnapshotterProvider)
        view = md.snapshotter("native")
        assert isinstance(view, snapshots.Snapshotter)
        assert md.snapshotter("native") is view  # shared by every service
        with with_namespace("default"):
            await view.prepare("k")
            assert [i.name async for i in view.walk()] == ["k"]
        with pytest.raises(NotFoundError, match="snapshotter 'overlayfs' is not loaded"):
            md.snapshotter("overlayfs")
        with pytest.raises(NotFoundError, match="snapshotter 'odd' is not loaded"):
            md.snapshotter("odd")  # not a snapshotter
    finally:
        await md.aclose()


async def test_bad_policy_is_refused(tmp_path: Path) -> None:
    reg = plugin.pycontainerd_plugins()[0]
    ic = InitContext(
        root=tmp_path,
        state=tmp_path,
        config={"content_sharing_policy": "everyone"},
        initialized={PluginType.CONTENT: {"content": LocalStore(tmp_path / "c")}},
    )
    with pytest.raises(InvalidArgumentError, match="content_sharing_policy"):
        await reg.init(ic)


@pytest.mark.parametrize(
    "module",
    [
        "pycontainerd.metadata.plugin",
        "pycontainerd.metadata.metadata",
        "pycontainerd.metadata.db",
        "pycontainerd.metadata.gc",
        "pycontainerd.metadata.scheduler",
    ],
)
def test_module_is_light(module: str) -> None:
    probe = (
        f"import sys, {module}; "
        "print(','.join(m for m in ('grpc', 'google.protobuf', 'pycontainerd.api') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"{module} imports {out} at import time"
