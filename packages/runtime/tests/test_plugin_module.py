"""The plugin module's wiring (the subsystem itself is built by a later issue)."""

from __future__ import annotations

import pytest

from pycontainerd.core.plugin import Registration
from pycontainerd.runtime import plugin


def test_plugin_module_implements_the_core_hook() -> None:
    # pluggy recognises an implementation by the marker's attribute.
    assert hasattr(plugin.pycontainerd_plugins, "pycontainerd_impl")


def test_registrations_are_registrations() -> None:
    registrations = list(plugin.pycontainerd_plugins())
    assert all(isinstance(r, Registration) for r in registrations)
    uris = [r.uri for r in registrations]
    assert len(uris) == len(set(uris)), "duplicate plugin URIs"


@pytest.mark.parametrize("heavy", ["grpc", "google.protobuf"])
def test_plugin_module_does_not_import(heavy: str) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    probe = f"import sys, pycontainerd.runtime.plugin; assert {heavy!r} not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
