"""The shim imports no grpc; its start/delete path imports neither asyncio nor protobuf."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _loaded(modules: str, heavy: list[str]) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    probe = f"import sys, {modules}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    return [m for m in out.stdout.strip().split(",") if m]


def test_shim_server_imports_no_grpc() -> None:
    modules = "pycontainerd.runtime.shim.main, pycontainerd.runtime.shim.server, "
    modules += "pycontainerd.runtime.shim.spare"
    assert _loaded(modules, ["grpc"]) == []


_START_PATH = "pycontainerd.runtime.shim.main, pycontainerd.runtime.shim.bootstrap"


@pytest.mark.parametrize("heavy", ["asyncio", "google.protobuf", "grpc"])
def test_start_and_delete_path_is_light(heavy: str) -> None:
    assert _loaded(_START_PATH, [heavy]) == []


def test_start_and_delete_path_takes_only_the_varint_from_the_api() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    probe = (
        f"import sys, {_START_PATH}; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('pycontainerd.api'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    # pycontainerd.api's __init__ and the varint module import nothing (api/tests/test_varint.py)
    assert out.stdout.strip().split(",") == ["pycontainerd.api", "pycontainerd.api.varint"]
