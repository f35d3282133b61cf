"""What one plugin's instance promises another: the contracts ``InitContext`` checks.

A plugin asks for an earlier plugin's instance by type and contract,
``ic.get_single(PluginType.METADATA, ContentStoreProvider)``; the context checks
the instance against the contract (``isinstance`` of a runtime-checkable
Protocol, or of a class) and raises :class:`PluginContractError`, naming the
plugin and what it lacks, instead of the plugin probing attributes.

The contracts are narrow: each asks for what one kind of consumer uses, so a
third-party provider (or a test's stand-in) implements only what is asked of
it. ``MetadataProvider`` is all of them, what the metadata plugin offers.

Importing this module must not import grpc.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pycontainerd.core.snapshots import SnapshotterProvider

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pycontainerd.core import containers
    from pycontainerd.core.content import Store

__all__ = [
    "ContainerStoreProvider",
    "ContentStoreProvider",
    "MetadataProvider",
    "PluginContractError",
    "PluginInfoProvider",
    "ShimEnvironment",
    "SnapshotterProvider",
    "missing_members",
]


class PluginContractError(TypeError):
    """An initialised plugin's instance does not implement the contract asked for.

    Attributes:
        uri: the plugin's URI (``io.containerd.metadata.v1.sqlite``).
        contract: the contract's name.
        missing: the members the instance lacks (``content_store()``); empty
            when the contract is a class the instance is no instance of.
    """

    def __init__(self, uri: str, instance: object, contract: type[Any]) -> None:
        self.uri = uri
        self.contract = contract.__name__
        self.missing = tuple(missing_members(instance, contract))
        kind = type(instance).__name__
        detail = f"{kind} lacks {', '.join(self.missing)}" if self.missing else f"it is a {kind}"
        super().__init__(f"plugin {uri} does not implement {self.contract}: {detail}")


def _protocol_members(contract: type[Any]) -> Iterable[str]:
    seen: set[str] = set()
    for klass in contract.__mro__:
        if klass in (Protocol, object) or not getattr(klass, "_is_protocol", False):
            continue
        for name in vars(klass):
            if not name.startswith("_") and name not in seen:
                seen.add(name)
                yield name


def missing_members(instance: object, contract: type[Any]) -> list[str]:
    """The members of Protocol ``contract`` that ``instance`` lacks, methods as ``name(args)``.

    Empty for a contract that is not a Protocol.
    """
    missing: list[str] = []
    for name in sorted(_protocol_members(contract)):
        if hasattr(instance, name):
            continue
        member = getattr(contract, name)
        if callable(member):
            params = [p for p in inspect.signature(member).parameters if p != "self"]
            missing.append(f"{name}({', '.join(params)})")
        else:
            missing.append(name)
    return missing


@runtime_checkable
class ContentStoreProvider(Protocol):
    """Hands out the namespaced content store (containerd's ``db.ContentStore()``).

    The content service and the walking differ take their store from it.
    """

    def content_store(self) -> Store:
        """The store every namespace sees its own blobs through.

        It may also be a :class:`pycontainerd.core.content.FastReader`; the
        content service then answers small reads on the event loop.
        """
        ...


@runtime_checkable
class ContainerStoreProvider(Protocol):
    """Hands out the namespaced container store (the Tasks service's containers)."""

    def container_store(self) -> containers.Store:
        """Containers of the current namespace."""
        ...


@runtime_checkable
class MetadataProvider(ContentStoreProvider, ContainerStoreProvider, SnapshotterProvider, Protocol):
    """Everything the metadata plugin (``io.containerd.metadata.v1``) offers other plugins."""


@runtime_checkable
class ShimEnvironment(Protocol):
    """Builds a shim's environment (the ``opt`` plugin puts its ``bin`` and ``lib`` first)."""

    def shim_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) adjusted for a shim."""
        ...


@runtime_checkable
class PluginInfoProvider(Protocol):
    """A plugin with extra information for ``Introspection.PluginInfo`` (containerd 2.x)."""

    async def plugin_info(self, type_url: str, value: bytes) -> tuple[str, bytes]:
        """Answer the request ``Any`` (``type_url``, ``value``) with a response ``Any``."""
        ...
