"""Client tooling stays free of server code (the package is built by a later issue)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("heavy", ["pycontainerd.daemon", "pycontainerd.metadata", "grpc"])
def test_importing_the_package_loads_no(heavy: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    probe = f"import sys, pycontainerd.ctr; assert {heavy!r} not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
