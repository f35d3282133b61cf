"""Registrations, the init context and the service protocols plugins return.

Importing this module must not import grpc: annotations name ``grpc.aio`` only
under ``TYPE_CHECKING``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload, runtime_checkable

from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.core.plugin.contracts import PluginContractError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping
    from pathlib import Path

    import grpc.aio

    from pycontainerd.core.plugin.types import PluginType

SKIP_PLUGIN_TEXT = "skip plugin"

T = TypeVar("T")


class SkipPluginError(Exception):
    """Raised by an init function to opt out (wrong platform, not configured).

    ``str()`` ends with ``skip plugin``, the text ``ctr plugins ls`` looks for
    to show ``skip`` rather than ``error``.
    """

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"{self.reason}: {SKIP_PLUGIN_TEXT}" if self.reason else SKIP_PLUGIN_TEXT


@runtime_checkable
class GrpcService(Protocol):
    """Anything the daemon should mount on its gRPC server."""

    def register(self, server: grpc.aio.Server) -> None:
        """Attach generated servicers to ``server`` (``add_*_to_server``)."""


@runtime_checkable
class TtrpcService(Protocol):
    """Anything the daemon should mount on its ttrpc server.

    ``server`` is a ``pycontainerd.api.ttrpc.Server``; it is typed loosely here
    so that core never depends on the api distribution.
    """

    def register_ttrpc(self, server: Any) -> None:
        """Attach handlers to the ttrpc ``server``."""


@runtime_checkable
class Closable(Protocol):
    """An instance with resources the daemon closes at shutdown, in reverse init order."""

    async def aclose(self) -> None:
        """Release resources. Called once."""


@runtime_checkable
class MetricsSource(Protocol):
    """An instance with metrics of its own for the daemon's ``/v1/metrics`` page.

    The daemon appends the lines of every plugin instance that has this method,
    after its own, each time the page is served.
    """

    def metrics_lines(self) -> Iterable[str]:
        """Prometheus text exposition lines (``# HELP``, ``# TYPE`` and samples).

        Called on the event loop for every scrape: cheap, no I/O. Metric names
        should carry a ``pycontainerd_<subsystem>_`` prefix.
        """


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """A plugin as declared; the daemon turns it into an instance via ``init``.

    Attributes:
        type: what the plugin provides.
        id: its name within the type (``overlayfs``, ``content``).
        init: awaited once, in dependency order, with the plugin's context.
        requires: types that must be initialised first. ``("*",)`` is not
            supported; list the types.
        config: the plugin's default configuration, merged under the user's
            ``[plugins."<uri>"]`` table and handed to ``init`` decoded.
    """

    type: PluginType
    id: str
    init: Callable[[InitContext], Awaitable[object]]
    requires: tuple[PluginType, ...] = ()
    config: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            msg = "plugin: no id"
            raise ValueError(msg)

    @property
    def uri(self) -> str:
        """Stable name used in logs, config and ``disabled_plugins``."""
        return f"{self.type}.{self.id}"


@dataclass(slots=True, kw_only=True)
class InitContext:
    """What an init function may see: its dirs, its config and earlier plugins.

    ``root`` and ``state`` are the plugin's own directories
    (``<root>/<uri>``, ``<state>/<uri>``); the plugin creates them when it
    needs them. ``exports`` is filled by the plugin and shown by
    ``ctr plugins ls -d``. ``properties`` carries daemon-wide values such as
    the gRPC and ttrpc addresses (containerd's ``ic.Properties``).
    """

    root: Path
    state: Path
    config: Mapping[str, Any]
    properties: Mapping[str, str] = field(default_factory=dict)
    exports: dict[str, str] = field(default_factory=dict)
    capabilities: list[str] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)
    initialized: Mapping[PluginType, Mapping[str, object]] = field(default_factory=dict, repr=False)

    @overload
    def get_by_type(self, plugin_type: PluginType) -> Mapping[str, object]: ...
    @overload
    def get_by_type(self, plugin_type: PluginType, contract: type[T]) -> Mapping[str, T]: ...
    def get_by_type(
        self, plugin_type: PluginType, contract: type[T] | None = None
    ) -> Mapping[str, object]:
        """All initialised instances of ``plugin_type`` by id.

        With ``contract``, every instance must implement it.

        Raises:
            NotFoundError: none is loaded (containerd's message).
            PluginContractError: an instance does not implement ``contract``.
        """
        by_id = self.initialized.get(plugin_type, {})
        if not by_id:
            msg = f"no plugins registered for {plugin_type}"
            raise NotFoundError(msg)
        if contract is not None:
            for plugin_id, instance in by_id.items():
                _check(plugin_type, plugin_id, instance, contract)
        return by_id

    @overload
    def get_single(self, plugin_type: PluginType) -> object: ...
    @overload
    def get_single(self, plugin_type: PluginType, contract: type[T]) -> T: ...
    def get_single(self, plugin_type: PluginType, contract: type[T] | None = None) -> object:
        """Return the only instance of ``plugin_type``, checked against ``contract`` if given.

        Raises:
            NotFoundError: none is loaded.
            LookupError: more than one is loaded.
            PluginContractError: the instance does not implement ``contract``.
        """
        by_id = self.get_by_type(plugin_type)
        if len(by_id) != 1:
            msg = f"expected exactly one {plugin_type} plugin, found {sorted(by_id)}"
            raise LookupError(msg)
        ((plugin_id, instance),) = by_id.items()
        if contract is not None:
            _check(plugin_type, plugin_id, instance, contract)
        return instance

    def get_optional(self, plugin_type: PluginType, contract: type[T]) -> T | None:
        """:meth:`get_single`, but None when no plugin of ``plugin_type`` is loaded.

        For a dependency a plugin can do without (events for a service
        built without an exchange).

        Raises:
            LookupError: more than one is loaded.
            PluginContractError: the instance does not implement ``contract``.
        """
        if not self.initialized.get(plugin_type):
            return None
        return self.get_single(plugin_type, contract)

    @overload
    def get_by_id(self, plugin_type: PluginType, plugin_id: str) -> object: ...
    @overload
    def get_by_id(self, plugin_type: PluginType, plugin_id: str, contract: type[T]) -> T: ...
    def get_by_id(
        self, plugin_type: PluginType, plugin_id: str, contract: type[T] | None = None
    ) -> object:
        """Return the instance ``plugin_type.plugin_id``, checked against ``contract`` if given.

        Raises:
            NotFoundError: it is not loaded.
            PluginContractError: it does not implement ``contract``.
        """
        by_id = self.initialized.get(plugin_type, {})
        if plugin_id not in by_id:
            msg = f"plugin {plugin_type}.{plugin_id}"
            raise NotFoundError(msg)
        instance = by_id[plugin_id]
        if contract is not None:
            _check(plugin_type, plugin_id, instance, contract)
        return instance

    def find_by_id(self, plugin_type: PluginType, plugin_id: str, contract: type[T]) -> T | None:
        """:meth:`get_by_id`, but None when that plugin is not loaded.

        Raises:
            PluginContractError: it is loaded and does not implement ``contract``.
        """
        if plugin_id not in self.initialized.get(plugin_type, {}):
            return None
        return self.get_by_id(plugin_type, plugin_id, contract)


def _check(plugin_type: PluginType, plugin_id: str, instance: object, contract: type[T]) -> T:
    if not isinstance(instance, contract):
        raise PluginContractError(f"{plugin_type}.{plugin_id}", instance, contract)
    return instance
