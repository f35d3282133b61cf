"""Extension points owned by the runtime (added through ``pycontainerd_addhooks``).

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from pycontainerd.core.plugin import hookspec

if TYPE_CHECKING:
    import pluggy


@hookspec(firstresult=True)
def pycontainerd_runtime_shim_binary(runtime: str) -> str | None:
    """Return the shim executable for ``runtime`` (e.g. ``io.containerd.runc.v2``).

    Called by the runtime v2 manager each time it starts a shim for a task
    whose runtime the ``shims`` table of ``io.containerd.runtime.v2.task``
    does not name. firstresult: the first non-``None`` answer wins; return
    ``None`` to pass. The answer is an absolute path or a command name looked
    up on the shim's ``PATH`` (the ``opt`` plugin's ``bin`` first). When no
    plugin answers, the manager applies containerd's rule
    (``io.containerd.X.vN`` -> ``containerd-shim-X-vN``). Must not block.
    """
    raise NotImplementedError  # spec only


def shim_binary(pm: pluggy.PluginManager, runtime: str) -> str | None:
    """The only caller of :func:`pycontainerd_runtime_shim_binary` (``pm.hook`` is untyped)."""
    caller = getattr(pm.hook, "pycontainerd_runtime_shim_binary", None)
    if caller is None:
        return None
    return cast("str | None", caller(runtime=runtime))
