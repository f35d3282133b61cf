"""A small checked reader over one TOML table, with file/key-aware errors.

Config decoding is explicit: each section asks its :class:`TableReader` for
each key with the expected type and a default, then calls
:meth:`TableReader.finish` so that any key nobody asked for is reported. No
annotation introspection happens at run time.

Importing this module must not import grpc.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from pycontainerd.config.errors import ConfigError

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_V = TypeVar("_V")


def key_part(key: str) -> str:
    """Quote ``key`` for a dotted key path the way TOML would need it."""
    if _BARE_KEY.fullmatch(key):
        return key
    escaped = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def join_key(prefix: str, key: str) -> str:
    """``join_key("grpc", "uid")`` -> ``"grpc.uid"``; quotes keys with dots."""
    part = key_part(key)
    return f"{prefix}.{part}" if prefix else part


def show(value: object) -> str:
    """Describe a TOML value for an error message (strings quoted, TOML spelling)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


class TableReader:
    """Typed access to one table of one file; remembers which keys were read.

    Args:
        file: The file the table came from, for messages.
        prefix: The table's key path (``""`` for the top level).
        table: The parsed TOML table.
    """

    def __init__(self, file: str, prefix: str, table: Mapping[str, Any]) -> None:
        self.file = file
        self.prefix = prefix
        self._table = table
        self._seen: set[str] = set()

    def path(self, key: str) -> str:
        """The full key path of ``key`` in this table."""
        return join_key(self.prefix, key)

    def error(self, key: str, problem: str) -> ConfigError:
        """A :class:`ConfigError` for ``key`` of this table."""
        return ConfigError(self.file, self.path(key) if key else self.prefix, problem)

    def has(self, key: str) -> bool:
        """Whether the table sets ``key``."""
        return key in self._table

    def raw(self, key: str) -> object:
        """The value of ``key`` unchecked (marks it as read); ``None`` if unset."""
        self._seen.add(key)
        return self._table.get(key)

    def string(self, key: str, default: str) -> str:
        """A string value."""
        return self._value(key, default, str, "a string")

    def integer(self, key: str, default: int, *, minimum: int, maximum: int) -> int:
        """An integer value within ``[minimum, maximum]`` (booleans are not integers)."""
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {show(value)}")
        if not minimum <= value <= maximum:
            raise self.error(key, f"{value} is out of range [{minimum}, {maximum}]")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        """A boolean value."""
        return self._value(key, default, bool, "a boolean")

    def _value(self, key: str, default: _V, kind: type[_V], what: str) -> _V:
        """The value of ``key`` if it is a ``kind`` (``what`` names it in the error)."""
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, kind):
            raise self.error(key, f"expected {what}, got {show(value)}")
        return value

    def string_list(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """An array of strings."""
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of strings, got {show(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ConfigError(
                    self.file, f"{self.path(key)}[{index}]", f"expected a string, got {show(item)}"
                )
        return tuple(value)

    def table(self, key: str) -> TableReader:
        """A sub-table as its own reader (empty when unset)."""
        value = self.raw(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a table, got {show(value)}")
        return TableReader(self.file, self.path(key), value)

    def items(self) -> list[tuple[str, object]]:
        """Every key and value (marks all as read), for free-form tables."""
        self._seen.update(self._table)
        return list(self._table.items())

    def names(self) -> list[str]:
        """Every key (marks all as read), for tables of named entries."""
        self._seen.update(self._table)
        return list(self._table)

    def finish(self) -> None:
        """Reject keys that were never read: they are misspelt or unsupported."""
        for key in self._table:
            if key not in self._seen:
                raise self.error(key, "unknown key")
