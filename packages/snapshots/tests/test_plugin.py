"""The plugin module: the Snapshots service takes its snapshotters from the metadata plugin."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.plugin import InitContext, PluginType, Registration
from pycontainerd.snapshots import plugin
from pycontainerd.snapshots.native import NativeSnapshotter
from pycontainerd.snapshots.service import SnapshotsService

if TYPE_CHECKING:
    from pycontainerd.core.snapshots import Snapshotter

SRC = Path(plugin.__file__).resolve().parent


class Provider:
    """Stands in for the metadata plugin's instance: views by backend name."""

    def __init__(self, views: dict[str, Snapshotter]) -> None:
        self.views = views
        self.asked: list[str] = []

    def snapshotter(self, name: str) -> Snapshotter:
        self.asked.append(name)
        return self.views[name]


def _service_context(tmp_path: Path, metadata: object) -> InitContext:
    native = NativeSnapshotter(tmp_path / "native")
    return InitContext(
        root=tmp_path,
        state=tmp_path,
        config={},
        initialized={
            PluginType.SNAPSHOT: {"native": native},
            PluginType.METADATA: {"sqlite": metadata},
        },
    )


def _registration(uri: str) -> Registration:
    return {r.uri: r for r in plugin.pycontainerd_plugins()}[uri]


async def test_service_serves_the_metadata_plugins_views(tmp_path: Path) -> None:
    view = NativeSnapshotter(tmp_path / "view")
    provider = Provider({"native": view})
    svc = await _registration("io.containerd.grpc.v1.snapshots").init(
        _service_context(tmp_path, provider)
    )
    assert isinstance(svc, SnapshotsService)
    assert provider.asked == ["native"]
    assert svc._get("native") is view  # what the service will serve


async def test_metadata_without_snapshotters_is_a_clear_error(tmp_path: Path) -> None:
    reg = _registration("io.containerd.grpc.v1.snapshots")
    with pytest.raises(
        TypeError, match=r"does not implement SnapshotterProvider: object lacks snapshotter\(name\)"
    ):
        await reg.init(_service_context(tmp_path, object()))


def test_sources_never_import_metadata() -> None:
    # snapshots sits below metadata in the dependency DAG.
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            else:
                continue
            if any(n.startswith("pycontainerd.metadata") for n in names):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
