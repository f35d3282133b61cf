"""Client-side and plugin-discovery modules stay light: no grpc, no protobuf, no daemon.

Each module is imported in a fresh interpreter, so nothing this test process
already imported can hide a heavy import.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

HEAVY = ("grpc", "google.protobuf", "pycontainerd.daemon")
GRPC_ONLY = ("grpc", "google.protobuf")


def _submodules(package: str) -> list[str]:
    """``package`` and every module below it, found without importing them."""
    pkg = importlib.import_module(package)
    names = [
        info.name
        for info in pkgutil.walk_packages(pkg.__path__, f"{package}.")
        if not info.name.rpartition(".")[2].startswith("test")
    ]
    return sorted([package, *names])


def _plugin_modules() -> list[str]:
    """The plugin module (``pycontainerd.<x>.plugin``) of every installed subsystem."""
    from importlib.metadata import entry_points

    return sorted({ep.value for ep in entry_points(group="pycontainerd.plugins")})


def _heavy_after_import(module: str, heavy: tuple[str, ...]) -> list[str]:
    probe = (
        f"import sys, {module}\n"
        f"print(','.join(sorted(m for m in sys.modules if m in {heavy!r} "
        f"or m.startswith(tuple(h + '.' for h in {heavy!r})))))"
    )
    # The child sees this process's sys.path: under Pants the sources and the
    # built distributions are reachable only through it.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, env=env
    )
    assert proc.returncode == 0, f"importing {module} failed:\n{proc.stderr}"
    return [m for m in proc.stdout.strip().split(",") if m]


@pytest.mark.parametrize(
    "module",
    [
        "pycontainerd.core",
        "pycontainerd.core.plugin",
        "pycontainerd.core.filters",
        "pycontainerd.config",
    ],
)
def test_named_module_is_light(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"{module} does not exist")
    assert _heavy_after_import(module, HEAVY) == []


@pytest.mark.parametrize(
    "module", _submodules("pycontainerd.core") + _submodules("pycontainerd.config")
)
def test_every_core_and_config_module_is_light(module: str) -> None:
    assert _heavy_after_import(module, HEAVY) == []


@pytest.mark.parametrize("module", _plugin_modules())
def test_plugin_modules_do_not_import_grpc(module: str) -> None:
    assert _heavy_after_import(module, GRPC_ONLY) == []


def test_probe_detects_a_heavy_import() -> None:
    # The probe itself must be able to fail: grpc's own package is heavy.
    assert "grpc" in _heavy_after_import("grpc", GRPC_ONLY)
