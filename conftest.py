"""Root conftest: only acts under Pants (``PANTS_SANDBOX`` set by pants.toml).

``uv run pytest`` runs in a venv where every workspace distribution is
installed (editable): its ``*.dist-info`` carries the ``pycontainerd.plugins``
entry points the daemon discovers, and ``.venv/bin`` (on PATH) holds the
console scripts ``containerd``, ``ctr`` and ``containerd-shim-pyrunc-v2``.
Pants installs no workspace distribution: it puts the source roots on the
pytest process' ``sys.path`` through ``PEX_EXTRA_SYS_PATH``, relative to the
sandbox. This module gives a Pants run the same world:

- ``sys.path`` and ``PEX_EXTRA_SYS_PATH`` become absolute, so child
  interpreters started in another directory (a shim runs in its bundle)
  import the same modules; the pex venv's interpreter reads
  ``PEX_EXTRA_SYS_PATH`` at start-up, even when a test replaces ``PYTHONPATH``;
- a temporary directory gets a ``<dist>-<version>.dist-info`` (``METADATA``,
  ``entry_points.txt``) per ``packages/*/pyproject.toml``, and goes on the
  import path: ``importlib.metadata`` (hence pluggy's
  ``load_setuptools_entrypoints``) finds the workspace distributions there,
  through the same discovery path an installation uses;
- its ``bin/`` gets a console script per ``[project.scripts]`` entry and goes
  first on ``PATH``, followed by the interpreter's own ``bin/`` (third-party
  scripts such as ``protoc-gen-mypy``), as under ``uv run``.

The pytest process creates the directory and removes it at exit; pytest-xdist
workers inherit the environment and reuse it.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SITE_ENV = "PYCONTAINERD_PANTS_SITE"
PEX_PATH_ENV = "PEX_EXTRA_SYS_PATH"
PEX_SUBPROCESS_PATH_ENV = "__PEX_EXTRA_SYS_PATH__"


def _dist_info(site: Path, pyproject: Path) -> dict[str, str]:
    """Write the dist-info of one workspace distribution; return its console scripts."""
    project = tomllib.loads(pyproject.read_text())["project"]
    name, version = project["name"], project["version"]
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {req}" for req in project.get("dependencies", [])]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    groups = dict(project.get("entry-points", {}))
    scripts = dict(project.get("scripts", {}))
    if scripts:
        groups["console_scripts"] = scripts
    if groups:
        text = "".join(
            f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()) + "\n"
            for group, entries in groups.items()
        )
        (info / "entry_points.txt").write_text(text)
    (info / "INSTALLER").write_text("pants-conftest\n")
    return scripts


def _console_script(bindir: Path, name: str, target: str, extra_path: list[str]) -> None:
    """Write ``bindir/name`` running ``module:function`` with this interpreter."""
    module, _, attr = target.partition(":")
    script = bindir / name
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.extend(p for p in {extra_path!r} if p not in sys.path)\n"
        f"from {module} import {attr}\n"
        f"sys.exit({attr}())\n"
    )
    script.chmod(0o755)


def _make_site(extra_path: list[str]) -> Path:
    """Create the dist-info and console-script directory (removed at exit)."""
    site = Path(tempfile.mkdtemp(prefix="pcd-pants-site-"))
    atexit.register(shutil.rmtree, site, ignore_errors=True)
    bindir = site / "bin"
    bindir.mkdir()
    for pyproject in sorted(ROOT.glob("packages/*/pyproject.toml")):
        for name, target in _dist_info(site, pyproject).items():
            _console_script(bindir, name, target, [*extra_path, str(site)])
    return site


def _under_pants() -> None:
    # Pants passes the source roots in PEX_EXTRA_SYS_PATH; pex's entry point
    # renames it to __PEX_EXTRA_SYS_PATH__ for subprocesses. Both are read by
    # the pex venv's site-packages/PEX_EXTRA_SYS_PATH.pth at interpreter start-up.
    roots = [
        os.path.abspath(p)
        for var in (PEX_PATH_ENV, PEX_SUBPROCESS_PATH_ENV)
        for p in os.environ.get(var, "").split(os.pathsep)
        if p
    ]
    site_env = os.environ.get(SITE_ENV)
    site = Path(site_env) if site_env else _make_site(list(dict.fromkeys(roots)))
    extra = list(dict.fromkeys([*roots, str(site)]))
    sys.path[:] = list(dict.fromkeys(os.path.abspath(p) if p else p for p in sys.path))
    sys.path.extend(p for p in extra if p not in sys.path)
    importlib.invalidate_caches()
    os.environ[SITE_ENV] = str(site)
    os.environ[PEX_PATH_ENV] = os.pathsep.join(extra)
    os.environ.pop(PEX_SUBPROCESS_PATH_ENV, None)
    path = [str(site / "bin"), os.path.dirname(sys.executable)]
    os.environ["PATH"] = os.pathsep.join([*path, os.environ.get("PATH", os.defpath)])


if os.environ.get("PANTS_SANDBOX"):
    _under_pants()
