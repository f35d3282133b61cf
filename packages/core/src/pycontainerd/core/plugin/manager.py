"""Building the pluggy plugin manager and the typed facade over its core hooks.

``pm.hook`` is untyped; callers go through the functions here instead
(``collect``), the way tox wraps its hooks.

Importing this module must not import grpc.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final, cast

import pluggy

from pycontainerd.core.plugin import hookspecs as core_hookspecs
from pycontainerd.core.plugin.markers import ENTRY_POINT_GROUP, PROJECT
from pycontainerd.core.plugin.registration import Registration

if TYPE_CHECKING:
    from collections.abc import Iterable

DISABLE_AUTOLOAD_ENV: Final = "PYCONTAINERD_DISABLE_PLUGIN_AUTOLOAD"


def make_plugin_manager(
    *, autoload: bool = True, blocked: Iterable[str] = ()
) -> pluggy.PluginManager:
    """Return a manager with the core hookspecs and the installed plugin modules.

    The historic hook ``pycontainerd_addhooks`` is fired before any module is
    loaded, so every module registered later (here or by the caller) adds its
    subsystem's hookspecs the moment it is registered.

    Args:
        autoload: load the entry points of group ``pycontainerd.plugins``.
            Ignored (treated as false) when the environment variable
            ``PYCONTAINERD_DISABLE_PLUGIN_AUTOLOAD`` is set to a non-empty value.
        blocked: entry-point names (plugin module names) never to register.

    Raises:
        pluggy.PluginValidationError: a loaded module implements a hook no
            spec declares (a misspelt name), found by ``check_pending()``.
    """
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(core_hookspecs)
    pm.hook.pycontainerd_addhooks.call_historic(kwargs={"pluginmanager": pm})
    for name in blocked:
        pm.set_blocked(name)
    if autoload and not os.environ.get(DISABLE_AUTOLOAD_ENV):
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def collect(pm: pluggy.PluginManager) -> list[Registration]:
    """Call ``pycontainerd_plugins`` on every module and flatten the answers.

    The result is in pluggy's call order; pass it to ``ordered`` for the
    stable, dependency-respecting order the daemon initialises in.

    Raises:
        TypeError: a module returned something that is not a ``Registration``.
    """
    results = cast("list[Iterable[object]]", pm.hook.pycontainerd_plugins())
    out: list[Registration] = []
    for batch in results:
        for item in batch:
            if not isinstance(item, Registration):
                msg = f"pycontainerd_plugins returned {type(item).__name__}, not a Registration"
                raise TypeError(msg)
            out.append(item)
    return out
