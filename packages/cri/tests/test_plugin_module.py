"""The plugin module's wiring and weight."""

from __future__ import annotations

import pytest

from pycontainerd.core.plugin import PluginType, Registration
from pycontainerd.core.testing import check_import_leaves_out
from pycontainerd.cri import plugin
from pycontainerd.cri.images import chain_id, normalize


def test_registers_the_cri_grpc_plugin() -> None:
    (reg,) = plugin.pycontainerd_plugins()
    assert isinstance(reg, Registration)
    assert reg.uri == "io.containerd.grpc.v1.cri"
    assert reg.type is PluginType.GRPC
    assert PluginType.METADATA in reg.requires
    assert PluginType.RUNTIME in reg.requires
    assert PluginType.TRANSFER in reg.requires  # PullImage runs on its in-process stores


@pytest.mark.parametrize("heavy", ["grpc", "google.protobuf"])
def test_plugin_module_does_not_import(heavy: str) -> None:
    check_import_leaves_out("pycontainerd.cri.plugin", heavy)


@pytest.mark.parametrize(
    ("ref", "full"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("library/busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("registry.k8s.io/pause:3.6", "registry.k8s.io/pause:3.6"),
        ("localhost:5000/x/y", "localhost:5000/x/y:latest"),
        ("localhost/p/pause:1", "localhost/p/pause:1"),
        ("busybox@sha256:" + "a" * 64, "docker.io/library/busybox@sha256:" + "a" * 64),
    ],
)
def test_references_are_normalized_like_containerd(ref: str, full: str) -> None:
    assert normalize(ref) == full


def test_chain_id() -> None:
    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    assert chain_id([a]) == a
    import hashlib

    assert chain_id([a, b]) == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_id([]) == ""
