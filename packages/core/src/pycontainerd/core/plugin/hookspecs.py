"""The core hookspecs every pycontainerd plugin module may implement.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.core.plugin.markers import hookspec

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pluggy

    from pycontainerd.core.plugin.registration import Registration


@hookspec(historic=True)
def pycontainerd_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add a subsystem's hookspecs with ``pluginmanager.add_hookspecs(module)``.

    Called by the daemon before any plugin module is loaded, as a historic
    hook: a module registered later still receives the call the moment it is
    registered, so its hookspecs exist before ``check_pending()`` runs.
    Return value: none.
    """


@hookspec
def pycontainerd_plugins() -> Iterable[Registration]:
    """Return this module's plugin registrations.

    Called once by the daemon; the results of all modules are concatenated,
    sorted by URI and ordered by ``requires``. Must be cheap and free of side
    effects: no I/O and no heavy imports. Work belongs in
    ``Registration.init``, which the daemon awaits in dependency order.
    """
    raise NotImplementedError  # spec only
