"""Write configs back out as TOML (``containerd config default`` / ``config dump``).

Output is ``version = 2`` TOML that :func:`pycontainerd.config.load` reads back
to an equal :class:`Config`. Top-level keys and tables come out sorted, as
containerd prints them. tomli-w is imported only when rendering.

Importing this module must not import grpc.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pycontainerd.config.model import Config, deep_merge, default_config, to_document

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pycontainerd.config.loader import LoadedConfig


def _sorted(document: Mapping[str, Any]) -> dict[str, Any]:
    # Sort the top level (containerd prints keys alphabetically); plugin
    # tables keep their own order, which is the order their authors chose.
    return {key: document[key] for key in sorted(document)}


def render(config: Config) -> str:
    """Render ``config`` as TOML with every key present."""
    import tomli_w

    return tomli_w.dumps(_sorted(to_document(config)))


def render_default(
    plugins: Mapping[str, Mapping[str, Any]] | None = None, *, rootless: bool | None = None
) -> str:
    """The built-in default config as TOML (``containerd config default``).

    Args:
        plugins: Registered plugins' default tables by URI; each appears as
            ``[plugins."<uri>"]``.
        rootless: Root's defaults (``False``), an ordinary user's (``True``),
            or by the effective uid (``None``).
    """
    return render(default_config(rootless, plugins))


def dump(
    loaded: LoadedConfig | Config, *, plugins: Mapping[str, Mapping[str, Any]] | None = None
) -> str:
    """Render a merged config (``containerd config dump``).

    The files that were merged are listed in leading comments and
    ``imports`` is left empty: everything they said is already in the output,
    so the dump loads back to the same config on its own. (containerd lists
    the merged files in ``imports``, including the main file, which this
    loader would reject as an import cycle.)

    Args:
        loaded: What :func:`pycontainerd.config.load` returned, or just its
            ``config`` (then only the imported files can be listed).
        plugins: Registered plugins' default tables by URI; the config's own
            plugin tables are merged over them, so the dump shows every
            setting each plugin will see.
    """
    if isinstance(loaded, Config):
        config, files = loaded, loaded.imports
    else:
        config, files = loaded.config, tuple(str(path) for path in loaded.files)
    if plugins:
        merged = {uri: deep_merge({}, table) for uri, table in plugins.items()}
        for uri, table in config.plugins.items():
            merged[uri] = deep_merge(merged.get(uri, {}), table)
        config = replace(config, plugins=MappingProxyType(merged))
    header = "".join(f"# merged from {path}\n" for path in files)
    body = render(replace(config, imports=()))
    return f"{header}\n{body}" if header else body
