"""Plugin composition: discover, order, initialise, close.

Discovery goes through the entry-point group ``pycontainerd.plugins`` (via
``pycontainerd.core.plugin.manager``); modules named in
``$PYCONTAINERD_EXTRA_PLUGINS`` (comma-separated import paths) are registered
too, which is how tests add plugins without installing a distribution. The
registrations are ordered by ``requires`` (``pycontainerd.core.plugin.graph``),
initialised one by one with their own root/state directories and decoded
config, and every outcome — instance, skip or error — is recorded for
introspection (``ctr plugins ls``).

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextvars
import importlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.core.plugin import (
    SKIP_PLUGIN_TEXT,
    Closable,
    InitContext,
    PluginType,
    Registration,
    SkipPluginError,
)
from pycontainerd.daemon.log import fields

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Mapping, Sequence
    from pathlib import Path
    from types import ModuleType

    import pluggy

log = logging.getLogger(__name__)

EXTRA_PLUGINS_ENV: Final = "PYCONTAINERD_EXTRA_PLUGINS"
"""Comma-separated module paths registered as plugin modules besides the entry points."""

DISABLE_AUTOLOAD_ENV: Final = "PYCONTAINERD_DISABLE_PLUGIN_AUTOLOAD"
"""When set (non-empty), entry points are not loaded; only explicit and extra modules are."""

current_plugins: contextvars.ContextVar[PluginSet] = contextvars.ContextVar("current_plugins")
"""The set being initialised; the daemon's introspection plugin reads the live list from it."""


class DaemonError(Exception):
    """A fatal start-up error; ``containerd: <str>`` is printed and the daemon exits 1."""


@dataclass(slots=True)
class PluginResult:
    """The outcome of one plugin's ``init``, as ``ctr plugins ls`` shows it."""

    registration: Registration
    instance: object | None = None
    error: BaseException | None = None
    exports: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok``, ``skip`` (the error text contains ``skip plugin``) or ``error``."""
        if self.error is None:
            return "ok"
        return "skip" if SKIP_PLUGIN_TEXT in str(self.error) else "error"


@dataclass(slots=True)
class PluginSet:
    """Every considered plugin in initialisation order, with its outcome."""

    results: list[PluginResult] = field(default_factory=list)
    _closed: bool = False

    @property
    def instances(self) -> list[tuple[Registration, object]]:
        """The successfully initialised plugins, in initialisation order."""
        return [(r.registration, r.instance) for r in self.results if r.error is None]

    def by_type(self) -> dict[PluginType, dict[str, object]]:
        """Initialised instances grouped by type and id (what ``InitContext`` sees)."""
        out: dict[PluginType, dict[str, object]] = {}
        for reg, instance in self.instances:
            out.setdefault(reg.type, {})[reg.id] = instance
        return out

    async def aclose(self) -> None:
        """Close every ``Closable`` instance in reverse initialisation order, once."""
        if self._closed:
            return
        self._closed = True
        for reg, instance in reversed(self.instances):
            if isinstance(instance, Closable):
                try:
                    await instance.aclose()
                except Exception:
                    log.exception("failed to close plugin %s", reg.uri)


def _import_modules(names: Iterable[str]) -> list[tuple[str, ModuleType]]:
    out = []
    for name in names:
        name = name.strip()  # noqa: PLW2901 - normalising the loop value
        if name:
            out.append((name, importlib.import_module(name)))
    return out


def extra_modules_from_env() -> list[str]:
    """The module paths listed in ``$PYCONTAINERD_EXTRA_PLUGINS``."""
    return [m for m in os.environ.get(EXTRA_PLUGINS_ENV, "").split(",") if m.strip()]


def make_manager(
    *,
    autoload: bool = True,
    blocked: Iterable[str] = (),
    modules: Iterable[ModuleType | str] = (),
) -> pluggy.PluginManager:
    """A plugin manager with the entry points (unless disabled) plus ``modules`` registered.

    Args:
        autoload: load the ``pycontainerd.plugins`` entry points; also off when
            ``$PYCONTAINERD_DISABLE_PLUGIN_AUTOLOAD`` is set.
        blocked: entry names (whole modules) not to load.
        modules: plugin modules (or their import paths) registered explicitly.
    """
    from pycontainerd.core.plugin.manager import make_plugin_manager

    autoload = autoload and not os.environ.get(DISABLE_AUTOLOAD_ENV)
    pm = make_plugin_manager(autoload=autoload, blocked=blocked)
    explicit: list[tuple[str, ModuleType]] = []
    for module in modules:
        if isinstance(module, str):
            explicit.extend(_import_modules([module]))
        else:
            explicit.append((module.__name__, module))
    explicit.extend(_import_modules(extra_modules_from_env()))
    for name, module in explicit:
        if not pm.is_registered(module) and pm.get_plugin(name) is None:
            pm.register(module, name=name)
    pm.check_pending()
    return pm


def collect(pm: pluggy.PluginManager) -> list[Registration]:
    """Every registration the manager's modules declare.

    Raises:
        DaemonError: two registrations share a URI.
    """
    from pycontainerd.core.plugin.manager import collect as core_collect

    regs = list(core_collect(pm))
    seen: set[str] = set()
    for reg in regs:
        if reg.uri in seen:
            msg = f"{reg.uri}: plugin: id already registered"
            raise DaemonError(msg)
        seen.add(reg.uri)
    return regs


def ordered(
    registrations: Iterable[Registration], disabled: Collection[str] = ()
) -> list[Registration]:
    """Enabled registrations, providers of a type before its requirers."""
    from pycontainerd.core.plugin.graph import ordered as graph_ordered

    return list(graph_ordered(registrations, disabled))


async def initialize(
    registrations: Sequence[Registration],
    *,
    root: Path,
    state: Path,
    plugin_config: Mapping[str, Mapping[str, Any]] | None = None,
    required: Collection[str] = (),
    properties: Mapping[str, str] | None = None,
    disabled: Collection[str] = (),
) -> PluginSet:
    """Initialise ``registrations`` in the given order and record each outcome.

    Args:
        registrations: already ordered (see :func:`ordered`) and filtered.
        root: the daemon root; each plugin gets ``<root>/<uri>`` (not created here).
        state: the daemon state dir; each plugin gets ``<state>/<uri>``.
        plugin_config: the user's ``[plugins."<uri>"]`` tables, deep-merged
            over each registration's defaults.
        required: URIs that must initialise, or start-up fails.
        properties: daemon-wide values handed to every plugin (addresses, ...).
        disabled: the ``disabled_plugins`` (named as such when required).

    Raises:
        DaemonError: a required plugin failed or skipped
            (``load required plugin <uri>: <error>``) or was never included
            (``required plugin [<uri> ...] not included: install <distribution>``,
            see :mod:`pycontainerd.daemon.missing`).
    """
    from pycontainerd.config.model import deep_merge

    user = plugin_config or {}
    pending_required = set(required)
    plugins = PluginSet()
    token = current_plugins.set(plugins)
    initialized: dict[PluginType, dict[str, object]] = {}
    try:
        for reg in registrations:
            log.info('loading plugin "%s"...', reg.uri, extra=fields(type=str(reg.type)))
            ic = InitContext(
                root=root / reg.uri,
                state=state / reg.uri,
                config=deep_merge(reg.config, user.get(reg.uri, {})),
                properties=dict(properties or {}),
                initialized=initialized,
            )
            result = PluginResult(registration=reg)
            plugins.results.append(result)
            started = time.monotonic()
            try:
                result.instance = await reg.init(ic)
            except Exception as exc:  # every init failure is recorded, none is fatal by itself
                result.error = exc
            result.exports = dict(ic.exports)
            result.capabilities = list(ic.capabilities)
            result.platforms = list(ic.platforms)
            if result.error is not None:
                err = result.error
                if isinstance(err, SkipPluginError) or SKIP_PLUGIN_TEXT in str(err):
                    log.info(
                        'skip loading plugin "%s"...',
                        reg.uri,
                        extra=fields(error=str(err), type=str(reg.type)),
                    )
                else:
                    log.warning("failed to load plugin %s", reg.uri, extra=fields(error=str(err)))
                if reg.uri in pending_required:
                    await plugins.aclose()
                    msg = f"load required plugin {reg.uri}: {err}"
                    raise DaemonError(msg) from err
                continue
            pending_required.discard(reg.uri)
            initialized.setdefault(reg.type, {})[reg.id] = result.instance
            log.debug(
                "plugin initialised",
                extra=fields(id=reg.uri, t=f"{time.monotonic() - started:.6f}s"),
            )
        if pending_required:
            await plugins.aclose()
            from pycontainerd.daemon.missing import install_hint

            missing = sorted(pending_required)
            hint = install_hint(missing, disabled)
            msg = f"required plugin [{' '.join(missing)}] not included: {hint}"
            raise DaemonError(msg)
    finally:
        current_plugins.reset(token)
    return plugins
