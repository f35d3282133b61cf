"""pycontainerd.config is imported by ctr --help and by client tooling: keep it light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import pycontainerd.config
from pycontainerd.config import loader

SRC = Path(__file__).resolve().parent.parent / "src" / "pycontainerd" / "config"

NEVER = ("grpc", "google.protobuf", "pycontainerd.daemon", "pycontainerd.api", "asyncio")
ALLOWED_THIRD_PARTY = {"platformdirs", "tomli_w"}


def loaded_after(code: str, watch: tuple[str, ...]) -> list[str]:
    probe = (
        f"import sys\n{code}\n"
        f"watch = {watch!r}\n"
        "print(','.join(sorted(m for m in sys.modules if m in watch "
        "or m.startswith(tuple(w + '.' for w in watch)))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return [m for m in proc.stdout.strip().split(",") if m]


def test_package_import_loads_nothing_heavy() -> None:
    watch = (*NEVER, "tomllib", "tomli_w", "platformdirs")
    assert loaded_after("import pycontainerd.config", watch) == []


def test_client_module_is_cheap() -> None:
    code = (
        "import pycontainerd.config.client as c\n"
        "c.resolve_address(None, {}, rootless=False)\n"
        "c.resolve_namespace(None, {})"
    )
    watch = (*NEVER, "tomllib", "tomli_w", "platformdirs")
    assert loaded_after(code, watch) == []


def test_loading_a_config_imports_no_grpc_and_no_writer(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('version = 2\nroot = "/x"\n')
    code = f"from pycontainerd.config import load\nload({str(config)!r}, rootless=False)"
    assert loaded_after(code, (*NEVER, "tomli_w", "platformdirs")) == []


def test_probe_can_fail() -> None:
    assert "tomllib" in loaded_after("import tomllib", ("tomllib",))


def test_lazy_exports() -> None:
    # A submodule named like an export would shadow it once imported.
    modules = {p.stem for p in SRC.glob("*.py")}
    assert not modules & set(pycontainerd.config.__all__)
    assert pycontainerd.config.load is loader.load
    assert "load" in dir(pycontainerd.config)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = pycontainerd.config.nope
    for name in pycontainerd.config.__all__:
        assert getattr(pycontainerd.config, name) is not None


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module)
    return roots


@pytest.mark.parametrize("path", sorted(SRC.glob("*.py")), ids=lambda p: p.name)
def test_only_allowed_dependencies(path: Path) -> None:
    for name in _imported_roots(path):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY or top == "__future__":
            continue
        assert name.startswith("pycontainerd.config"), f"{path.name} imports {name}"
