"""The introspection service's logic (``io.containerd.service.v1.introspection-service``).

Pure Python: the gRPC adaptor lives in ``services/introspection.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from pycontainerd.core.plugin import PluginInfoProvider

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from pycontainerd.daemon.plugins import PluginResult, PluginSet

UUID_DIR: Final = "io.containerd.grpc.v1.introspection"
DEPRECATION_PREFIX: Final = "io.containerd.deprecation/"


@dataclass(frozen=True, slots=True)
class Deprecation:
    """A deprecated feature that was used, with when it was last used (ns since the epoch)."""

    id: str
    message: str
    last_occurrence_ns: int


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What the ``Server`` RPC answers."""

    uuid: str
    pid: int
    pidns: int
    deprecations: tuple[Deprecation, ...]


class _PluginAdaptor:
    """Exposes a plugin's ``type`` and ``id`` to the filter grammar."""

    def __init__(self, result: PluginResult) -> None:
        self._result = result

    def field(self, fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        reg = self._result.registration
        if fieldpath[0] == "type":
            return str(reg.type), True
        if fieldpath[0] == "id":
            return reg.id, True
        return "", False


class Introspection:
    """Answers ``Plugins``, ``PluginInfo`` and ``Server`` from the live plugin set and the root."""

    def __init__(self, plugins: PluginSet, root: Path) -> None:
        self._plugins = plugins
        self._uuid_path = root / UUID_DIR / "uuid"
        self._deprecations: dict[str, Deprecation] = {}

    def plugins(self, filters: Sequence[str] = ()) -> list[PluginResult]:
        """Every plugin in initialisation order, narrowed by ``filters`` (OR of ANDs).

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        results = list(self._plugins.results)
        if not any(filters):
            return results
        from pycontainerd.core import filters as filter_grammar

        parsed = filter_grammar.parse(*filters)
        return [r for r in results if parsed.match(_PluginAdaptor(r))]

    def plugin(self, plugin_type: str, plugin_id: str) -> PluginResult:
        """The plugin ``<type>.<id>``, loaded or not.

        Raises:
            NotFoundError: ``plugin <type>.<id> not found`` (upstream's text).
        """
        for result in self._plugins.results:
            reg = result.registration
            if str(reg.type) == plugin_type and reg.id == plugin_id:
                return result
        msg = f"plugin {plugin_type}.{plugin_id} not found"
        raise NotFoundError(msg)

    async def plugin_info(
        self, plugin_type: str, plugin_id: str, options: tuple[str, bytes] | None
    ) -> tuple[PluginResult, tuple[str, bytes] | None]:
        """The plugin and, when ``options`` (an ``Any``) are given, the extra info it provides.

        A plugin provides extra info through an async ``plugin_info(type_url,
        value) -> (type_url, value)`` method on its instance (the runtime v2
        task manager answers a ``RuntimeRequest`` with the runtime's
        ``RuntimeInfo``), as containerd 2.x's ``PluginInfo``.

        Raises:
            NotFoundError: no such plugin.
            FailedPreconditionError: the plugin did not load.
            UnimplementedError: the plugin provides no extra information.
        """
        result = self.plugin(plugin_type, plugin_id)
        if options is None:
            return result, None
        if result.error is not None:
            msg = "cannot get extra info, plugin not successfully loaded"
            raise FailedPreconditionError(msg)
        provider = result.instance
        if not isinstance(provider, PluginInfoProvider):
            msg = "plugin does not provided extra information"  # sic, upstream's text
            raise UnimplementedError(msg)
        extra = await provider.plugin_info(*options)
        return result, extra

    def uuid(self) -> str:
        """The daemon's UUID, created (random v4) and persisted on first use."""
        with contextlib.suppress(FileNotFoundError):
            text = self._uuid_path.read_text().strip()
            if text:
                return str(uuidlib.UUID(text))
        self._uuid_path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        value = str(uuidlib.uuid4())
        tmp = self._uuid_path.with_suffix(".tmp")
        tmp.write_text(value)
        tmp.replace(self._uuid_path)
        return value

    def emit_deprecation(self, short_id: str, message: str) -> None:
        """Record that a deprecated feature was used (shown by ``Server``)."""
        full = (
            short_id if short_id.startswith(DEPRECATION_PREFIX) else DEPRECATION_PREFIX + short_id
        )
        if not short_id:
            msg = "deprecation id must not be empty"
            raise InvalidArgumentError(msg)
        self._deprecations[full] = Deprecation(full, message, time.time_ns())

    def server(self) -> ServerInfo:
        """``uuid``, ``pid``, the pid namespace inode and the deprecations seen."""
        try:
            pidns = os.stat("/proc/self/ns/pid").st_ino
        except OSError:
            pidns = 0
        return ServerInfo(
            uuid=self.uuid(),
            pid=os.getpid(),
            pidns=pidns,
            deprecations=tuple(sorted(self._deprecations.values(), key=lambda d: d.id)),
        )
