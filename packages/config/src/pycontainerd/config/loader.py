"""Load a daemon config file with its ``imports``, merged into one :class:`Config`.

Rules (containerd's, with its version 2.0 fix for plugin tables):

- ``imports`` entries are paths relative to the importing file's directory
  (absolute paths stay as they are); entries with ``*``, ``?`` or ``[`` are
  globs, expanded in sorted order, and may match nothing. A plain entry that
  names a missing file is an error.
- Files are read breadth-first from the main file, each file once, and merged
  in that order: later files win. So an imported file overrides the file that
  imports it, as in containerd.
- Tables merge key by key at every depth, so two files can each set different
  keys of ``[plugins."io.containerd.grpc.v1.cri"]`` (containerd 1.x replaced
  the whole plugin table). Arrays and scalars are replaced.
- A file imported twice (a diamond) is read once. A file whose imports lead
  back to itself is an import cycle, which is an error: it is almost always a
  mistake, and silently ignoring it hides which file wins.
- Each file is validated on its own first, so every message names the file
  and key at fault.

Importing this module must not import grpc.
"""

from __future__ import annotations

import glob
import os
import tomllib
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycontainerd.config import paths
from pycontainerd.config.errors import ConfigError
from pycontainerd.config.model import Config, decode, deep_merge, default_config

if TYPE_CHECKING:
    from collections.abc import Mapping

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedConfig:
    """A merged config and the files it came from.

    Attributes:
        config: The merged, validated configuration.
        files: Every file read, in merge order (the main file first). Empty
            when no file existed and the built-in defaults were used.
    """

    config: Config
    files: tuple[Path, ...]


@dataclass(slots=True)
class _File:
    path: Path  # as named (joined onto the importer's directory), for messages
    document: dict[str, Any]
    imports: list[tuple[int, Path]]  # (index in `imports`, resolved path) per file to read


def _identity(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _read(path: Path, *, importer: Path | None, key: str) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        if importer is None:
            raise ConfigError(str(path), "", "no such file") from None
        raise ConfigError(str(importer), key, f'imported file "{path}" not found') from None
    except IsADirectoryError:
        raise ConfigError(str(path), "", "is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(str(path), "", "permission denied") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), "", f"invalid TOML: not UTF-8 ({exc.reason})") from None


def _expand_imports(file: Path, entries: tuple[str, ...]) -> list[tuple[int, Path]]:
    base = file.parent
    out: list[tuple[int, Path]] = []
    for index, entry in enumerate(entries):
        target = base / entry  # an absolute entry replaces base
        if _GLOB_CHARS.intersection(entry):
            out.extend((index, Path(match)) for match in sorted(glob.glob(str(target))))
        else:
            out.append((index, target))
    return out


def _find_cycle(files: Mapping[Path, _File]) -> tuple[_File, int, list[Path]] | None:
    """Return (importer, imports index, cycle path) for the first cycle found, else None."""
    done: set[Path] = set()

    def visit(node: Path, stack: list[Path]) -> tuple[_File, int, list[Path]] | None:
        stack.append(node)
        current = files[node]
        for index, target in current.imports:
            ident = _identity(target)
            if ident in stack:
                cycle = [files[p].path for p in stack[stack.index(ident) :]] + [target]
                return current, index, cycle
            if ident not in done:
                found = visit(ident, stack)
                if found is not None:
                    return found
        stack.pop()
        done.add(node)
        return None

    for node in files:
        if node not in done:
            found = visit(node, [])
            if found is not None:
                return found
    return None


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    rootless: bool | None = None,
    plugin_defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedConfig:
    """Load ``path`` and everything it imports into one validated config.

    Args:
        path: The main config file. ``None`` means the default location
            (:func:`pycontainerd.config.paths.default_config_path`); when that
            file does not exist the built-in defaults are returned. A named
            file that does not exist is an error.
        rootless: Which built-in defaults to start from (``None``: by uid).
        plugin_defaults: Registered plugins' default tables by URI; the
            files' ``[plugins."<uri>"]`` tables are merged over them.

    Returns:
        The merged config and the files read, in merge order.

    Raises:
        ConfigError: A file is missing or not valid TOML, a key is unknown or
            has the wrong type, a plugin URI is malformed, an import is missing
            or leads back to its importer, or the version is not 2. The message
            names the file and key.
    """
    defaults = default_config(rootless, plugin_defaults)
    if path is None:
        default_path = Path(paths.default_config_path(rootless))
        if not default_path.exists():
            return LoadedConfig(config=defaults, files=())
        main = default_path
    else:
        main = Path(path)

    files: dict[Path, _File] = {}
    queue: deque[tuple[Path, Path | None, str]] = deque([(main, None, "")])
    while queue:
        file, importer, key = queue.popleft()
        ident = _identity(file)
        if ident in files:
            continue  # already read: each file once
        document = _read(file, importer=importer, key=key)
        # Validate this file alone, so errors name it rather than the merge.
        own = decode(document, str(file), defaults)
        imports = _expand_imports(file, own.imports)
        files[ident] = _File(path=file, document=document, imports=imports)
        queue.extend((target, file, f"imports[{index}]") for index, target in imports)

    cycle = _find_cycle(files)
    if cycle is not None:
        importer_file, index, chain = cycle
        shown = " -> ".join(str(p) for p in chain)
        raise ConfigError(str(importer_file.path), f"imports[{index}]", f"import cycle: {shown}")

    merged: dict[str, Any] = {}
    for entry in files.values():
        merged = deep_merge(merged, entry.document)
    merged.pop("imports", None)
    config = decode(merged, str(main), defaults)
    loaded = tuple(entry.path for entry in files.values())
    config = replace(config, imports=tuple(str(p) for p in loaded[1:]))
    return LoadedConfig(config=config, files=loaded)


def loads(
    text: str,
    *,
    name: str = "<string>",
    rootless: bool | None = None,
    plugin_defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Decode one config document from a string (its ``imports`` are not followed).

    Args:
        text: The TOML text.
        name: What to call it in error messages.
        rootless: Which built-in defaults unset keys take (``None``: by uid).
        plugin_defaults: Registered plugins' default tables by URI.

    Raises:
        ConfigError: As for :func:`load`.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "", f"invalid TOML: {exc}") from None
    return decode(document, name, default_config(rootless, plugin_defaults))
