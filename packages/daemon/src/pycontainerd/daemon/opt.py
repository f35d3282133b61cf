"""The ``opt`` plugin: a directory for binaries and libraries that ``ctr install`` fills.

Unlike upstream, ``bin`` and ``lib`` are not created at every start, only when
something asks for them (:meth:`Opt.ensure_dirs`). The runtime calls
:meth:`Opt.shim_env` (or the module-level :func:`shim_env`) to build the
environment of a shim, in which ``<path>/bin`` comes first on ``PATH`` and
``<path>/lib`` first on ``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

OPT_DIR_NAME: Final = "opt"


def default_path() -> str:
    """The default ``path``: ``<default root>/opt``.

    That is ``/var/lib/pycontainerd/opt`` as root and ``<user data dir>/opt``
    otherwise: under our own prefix, never upstream's ``/opt/containerd``.
    It does not follow ``--root``, so every daemon of a user shares it.
    """
    from pycontainerd.config.paths import default_root

    return os.path.join(default_root(), OPT_DIR_NAME)


def _prepend(entry: str, current: str | None) -> str:
    parts = [p for p in (current or "").split(os.pathsep) if p and p != entry]
    return os.pathsep.join([entry, *parts])


class Opt:
    """The managed ``opt`` directory (``io.containerd.internal.v1.opt``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def bin(self) -> Path:
        """``<path>/bin``."""
        return self.path / "bin"

    @property
    def lib(self) -> Path:
        """``<path>/lib``."""
        return self.path / "lib"

    def ensure_dirs(self) -> None:
        """Create ``bin`` and ``lib`` (0711) on first use."""
        for d in (self.bin, self.lib):
            d.mkdir(mode=0o711, parents=True, exist_ok=True)

    def shim_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with bin/lib prepended."""
        env = dict(os.environ if base is None else base)
        env["PATH"] = _prepend(str(self.bin), env.get("PATH"))
        env["LD_LIBRARY_PATH"] = _prepend(str(self.lib), env.get("LD_LIBRARY_PATH"))
        return env


_current: Opt | None = None


def current() -> Opt | None:
    """The daemon's ``opt`` instance once the plugin has initialised, else ``None``."""
    return _current


def set_current(opt: Opt | None) -> None:
    """Record the daemon's ``opt`` instance (called by the plugin's init)."""
    global _current  # noqa: PLW0603 - one daemon per process
    _current = opt


def shim_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a shim: :meth:`Opt.shim_env` when ``opt`` is loaded, else a copy."""
    opt = current()
    if opt is None:
        return dict(os.environ if base is None else base)
    return opt.shim_env(base)
