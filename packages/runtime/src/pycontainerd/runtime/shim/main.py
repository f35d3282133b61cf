"""Command line of ``containerd-shim-pyrunc-v2``: Go-style flags, then an action.

containerd runs a shim as ``<shim> -namespace NS -address ADDR
-publish-binary BIN -id ID [-debug] start`` (and ``... -bundle B delete``);
without an action the shim serves. Flags follow Go's ``flag`` package: one or
two dashes, ``-name value`` or ``-name=value``, booleans without a value, and
parsing stops at the first positional argument.

The flags are parsed in :mod:`~pycontainerd.runtime.shim.flags` (which the
bootstrap and server modules import, so neither imports this one). This module
imports only the standard library's small modules: the ``start`` path of a
shim that is already running must cost as little as possible.
"""

from __future__ import annotations

import os
import sys

from pycontainerd.runtime.shim.flags import SPARE_FD_ENV, Flags, UsageError, parse_args

__all__ = ["Flags", "UsageError", "main", "parse_args"]

VERSION = "0.1.0.dev0"
RUNTIME_NAME = "io.containerd.pyrunc.v2"


def _answer_and_exit(flags: Flags) -> int | None:
    """``-v`` and ``-info``: answer and exit (None: neither was asked)."""
    if flags.version:
        sys.stdout.write(
            f"containerd-shim-pyrunc-v2:\n  Version:  {VERSION}\n  Runtime:  {RUNTIME_NAME}\n"
        )
        return 0
    if flags.info:
        from pycontainerd.runtime.shim import info

        return info.run(RUNTIME_NAME, VERSION)
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the shim; returns the process exit status."""
    args = sys.argv[1:] if argv is None else argv
    try:
        flags = parse_args(args)
    except UsageError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    early = _answer_and_exit(flags)
    if early is not None:
        return early
    spare_fd = os.environ.pop(SPARE_FD_ENV, "")
    if spare_fd and not flags.action:
        from pycontainerd.runtime.shim import spare

        return spare.run(int(spare_fd))
    if not flags.namespace:
        flags.namespace = os.environ.get("NAMESPACE", "")
    if not flags.namespace:
        sys.stderr.write("shim namespace cannot be empty\n")
        return 1
    if flags.action in {"start", "delete"}:
        from pycontainerd.runtime.shim import bootstrap

        return bootstrap.start(flags) if flags.action == "start" else bootstrap.delete(flags)
    from pycontainerd.runtime.shim import server

    return server.serve(flags)


if __name__ == "__main__":
    sys.exit(main())
