"""From command line and config file to what the daemon runs with.

Wraps ``pycontainerd.config`` (load, imports, merge, defaults) and applies
containerd's command-line overrides and checks.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycontainerd.config.loader import LoadedConfig
    from pycontainerd.config.model import Config


class SettingsError(Exception):
    """The configuration cannot be used; ``containerd: <str>`` is printed."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The merged configuration plus the logging choice and the files read."""

    config: Config
    log_level: str = "info"
    log_format: str = "text"
    files: tuple[str, ...] = ()


def registered_plugin_defaults() -> dict[str, Mapping[str, Any]]:
    """Default config tables of every installed plugin, by URI (for ``config default``)."""
    from pycontainerd.daemon.plugins import collect, make_manager

    return {reg.uri: reg.config for reg in collect(make_manager()) if reg.config}


def _load(config_path: str | None) -> LoadedConfig:
    from pycontainerd.config import load

    try:
        return load(config_path)
    except (OSError, ValueError) as exc:  # ConfigError is a ValueError
        raise SettingsError(str(exc)) from exc


def load_settings(
    config_path: str | None,
    *,
    log_level: str | None = None,
    address: str | None = None,
    root: str | None = None,
    state: str | None = None,
) -> Settings:
    """Load the config and apply ``--log-level``, ``--address``, ``--root``, ``--state``.

    Raises:
        SettingsError: the file cannot be loaded, or the result is unusable
            (containerd's texts: ``grpc address cannot be empty: invalid
            argument``, ``root and state must be different paths``, ...).
    """
    loaded = _load(config_path)
    config, files = loaded.config, tuple(str(f) for f in loaded.files)
    changes: dict[str, Any] = {}
    if root:
        changes["root"] = os.path.abspath(root)
    if state:
        changes["state"] = os.path.abspath(state)
    if address is not None:
        changes["grpc"] = dataclasses.replace(config.grpc, address=address.removeprefix("unix://"))
    if changes:
        config = dataclasses.replace(config, **changes)
    if not config.grpc.address:
        msg = "grpc address cannot be empty: invalid argument"
        raise SettingsError(msg)
    if not config.root:
        msg = "root must be specified"
        raise SettingsError(msg)
    if not config.state:
        msg = "state must be specified"
        raise SettingsError(msg)
    if os.path.abspath(config.root) == os.path.abspath(config.state):
        msg = "root and state must be different paths"
        raise SettingsError(msg)
    level = log_level or config.debug.level or "info"
    fmt = config.debug.format or "text"
    return Settings(config=config, log_level=level, log_format=fmt, files=files)


def render_default() -> str:
    """``containerd config default``: the built-in config with every plugin's defaults."""
    from pycontainerd.config import render_default as config_render_default

    return config_render_default(plugins=registered_plugin_defaults())


def render_dump(config_path: str | None) -> str:
    """``containerd config dump``: the merged config, ``imports`` listing every file read.

    Raises:
        SettingsError: the config cannot be loaded.
    """
    from pycontainerd.config import dump

    return dump(_load(config_path), plugins=registered_plugin_defaults())
