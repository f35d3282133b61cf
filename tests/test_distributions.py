"""Every distribution builds alone, ships only its own package, and installs cleanly.

These tests run ``uv build`` on the real checkout and ``pip`` against the
package index, so they need a full checkout and network access to the index.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.parent.name for p in (ROOT / "packages").glob("*/pyproject.toml"))
META = "pycontainerd"
"""The meta-distribution (``packages/pycontainerd``): named without a prefix, ships no code."""


def _dist_name(package: str) -> str:
    return package if package == META else f"pycontainerd-{package}"


pytestmark = [pytest.mark.slow, pytest.mark.network]


def _build(uv: str, root: Path, package: str, out: Path, *, wheel_only: bool = False) -> Path:
    """Build ``pycontainerd-<package>`` alone with uv and return its wheel."""
    argv = [uv, "build", "--package", _dist_name(package), "--out-dir", str(out), "-q"]
    if wheel_only:
        argv.append("--wheel")
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.parametrize("package", PACKAGES)
def test_distribution_builds_alone(
    package: str, full_checkout: Path, uv: str, tmp_path: Path
) -> None:
    wheel = _build(uv, full_checkout, package, tmp_path)
    assert list(tmp_path.glob("*.tar.gz")), "no sdist was built"
    name = package.replace("-", "_")
    with zipfile.ZipFile(wheel) as zf:
        files = zf.namelist()
        metadata = next(f for f in files if f.endswith(".dist-info/METADATA"))
        meta = zf.read(metadata).decode()
    if package == META:
        assert [f for f in files if not f.startswith(wheel_name(wheel))] == []
        assert "Name: pycontainerd\n" in meta
        assert "Requires-Dist: pycontainerd-daemon[standard]\n" in meta
        return
    assert "pycontainerd/__init__.py" not in files
    assert f"pycontainerd/{name}/py.typed" in files
    outside = [f for f in files if not f.startswith((f"pycontainerd/{name}/", wheel_name(wheel)))]
    assert outside == [], f"files outside pycontainerd/{name}/"
    assert f"Name: pycontainerd-{package}\n" in meta


def wheel_name(wheel: Path) -> str:
    """The ``<name>-<version>.dist-info/`` prefix of a wheel's metadata."""
    dist, version = wheel.name.split("-")[:2]
    return f"{dist}-{version}.dist-info/"


def test_config_installs_alone_without_grpc(full_checkout: Path, uv: str, tmp_path: Path) -> None:
    # Only config from this checkout, into an empty venv: every requirement
    # comes from the index, so a dependency on another pycontainerd
    # distribution (which is on no index) or a server-side one shows up here.
    wheel = _build(uv, full_checkout, "config", tmp_path / "config", wheel_only=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "pycontainerd-config==" in installed
    for forbidden in ("grpcio", "protobuf", "pycontainerd-core", "pycontainerd-api"):
        assert f"{forbidden}==" not in installed
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys\n"
        "import pycontainerd.config\n"
        "assert 'grpc' not in sys.modules, sorted(sys.modules)\n"
        "from pycontainerd.config import ConfigError, loads\n"
        "try:\n"
        "    loads('version = 2\\nroot = 1\\n', name='x.toml', rootless=False)\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "assert 'grpc' not in sys.modules, sorted(sys.modules)\n"
    )
    proc = subprocess.run([str(python), str(probe)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "x.toml: root: expected a string, got 1: invalid argument\n"


def test_every_package_is_a_workspace_member(checkout_files: Path) -> None:
    root = tomllib.loads((checkout_files / "pyproject.toml").read_text())
    assert root["tool"]["uv"]["workspace"]["members"] == ["packages/*"]
    lock = (checkout_files / "uv.lock").read_text()
    for package in PACKAGES:
        assert f'name = "{_dist_name(package)}"' in lock, f"{package} missing from uv.lock"
