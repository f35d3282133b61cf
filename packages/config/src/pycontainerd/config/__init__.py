"""Daemon and client configuration for pycontainerd.

- :func:`load` reads a daemon ``config.toml`` (``version = 2``) with its
  ``imports``, deep-merges them and validates every key; errors are
  :class:`ConfigError` naming the file and key.
- :class:`Config` and its section dataclasses are the model;
  :func:`default_config` gives the defaults as root or as an ordinary user.
- :func:`render`, :func:`render_default` and :func:`dump` write TOML back.
- :mod:`pycontainerd.config.client` resolves the client's socket and
  namespace; :mod:`pycontainerd.config.duration` parses Go durations.

Names are imported lazily on first use, so ``import pycontainerd.config``
(and ``pycontainerd.config.client``, which ``ctr --help`` needs) costs almost
nothing. This package never imports grpc, protobuf or any other pycontainerd
distribution: its errors are :class:`ConfigError` (a ``ValueError``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pycontainerd.config.duration import format_duration, parse_duration
    from pycontainerd.config.errors import ConfigError, ConfigValueError
    from pycontainerd.config.loader import LoadedConfig, load, loads
    from pycontainerd.config.model import (
        CgroupConfig,
        Config,
        DebugConfig,
        GrpcConfig,
        MetricsConfig,
        ProxyPlugin,
        StreamProcessor,
        TtrpcConfig,
        check_plugin_uri,
        deep_merge,
        default_config,
    )
    from pycontainerd.config.rendering import dump, render, render_default

_EXPORTS: dict[str, str] = {
    "format_duration": "duration",
    "parse_duration": "duration",
    "ConfigError": "errors",
    "ConfigValueError": "errors",
    "LoadedConfig": "loader",
    "load": "loader",
    "loads": "loader",
    "CgroupConfig": "model",
    "Config": "model",
    "DebugConfig": "model",
    "GrpcConfig": "model",
    "MetricsConfig": "model",
    "ProxyPlugin": "model",
    "StreamProcessor": "model",
    "TtrpcConfig": "model",
    "check_plugin_uri": "model",
    "deep_merge": "model",
    "default_config": "model",
    "dump": "rendering",
    "render": "rendering",
    "render_default": "rendering",
}

__all__ = [
    "CgroupConfig",
    "Config",
    "ConfigError",
    "ConfigValueError",
    "DebugConfig",
    "GrpcConfig",
    "LoadedConfig",
    "MetricsConfig",
    "ProxyPlugin",
    "StreamProcessor",
    "TtrpcConfig",
    "check_plugin_uri",
    "deep_merge",
    "default_config",
    "dump",
    "format_duration",
    "load",
    "loads",
    "parse_duration",
    "render",
    "render_default",
]


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
