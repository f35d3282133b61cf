"""Command line of ``containerd-shim-pyrunc-v2``: Go-style flags, then an action.

containerd runs a shim as ``<shim> -namespace NS -address ADDR
-publish-binary BIN -id ID [-debug] start`` (and ``... -bundle B delete``);
without an action the shim serves. Flags follow Go's ``flag`` package: one or
two dashes, ``-name value`` or ``-name=value``, booleans without a value, and
parsing stops at the first positional argument.

This module imports only the standard library's small modules: the ``start``
path of a shim that is already running must cost as little as possible.
"""

from __future__ import annotations

import os
import sys

__all__ = ["Flags", "UsageError", "main", "parse_args"]

VERSION = "0.1.0.dev0"
RUNTIME_NAME = "io.containerd.pyrunc.v2"

_BOOL_FLAGS = frozenset({"debug", "v", "info"})
_VALUE_FLAGS = frozenset({"namespace", "id", "socket", "bundle", "address", "publish-binary"})


class UsageError(Exception):
    """The command line is wrong; the text is printed and the exit status is 2."""


class Flags:
    """The parsed command line (a plain class: ``dataclasses`` costs milliseconds to import).

    Attributes:
        namespace: containerd namespace of the task (required).
        id: task (container) id.
        address: the daemon's gRPC socket address.
        publish_binary: the daemon binary (kept for compatibility; events go
            over ttrpc to ``TTRPC_ADDRESS``).
        bundle: bundle directory (``delete``; defaults to the working directory).
        socket: the socket to serve on (serve mode, set by ``start``).
        debug: log at debug level.
        version: print the version and exit.
        info: answer containerd 2.x's runtime info protocol (options on stdin,
            ``RuntimeInfo`` on stdout) and exit.
        action: ``start``, ``delete`` or ``""`` (serve).
        extra: arguments after the action.
    """

    __slots__ = (
        "action",
        "address",
        "bundle",
        "debug",
        "extra",
        "id",
        "info",
        "namespace",
        "publish_binary",
        "socket",
        "version",
    )

    def __init__(self) -> None:
        self.namespace = ""
        self.id = ""
        self.address = ""
        self.publish_binary = ""
        self.bundle = ""
        self.socket = ""
        self.debug = False
        self.version = False
        self.info = False
        self.action = ""
        self.extra: list[str] = []


def parse_args(argv: list[str]) -> Flags:
    """Parse ``argv`` (without the program name) the way Go's ``flag`` does.

    Raises:
        UsageError: an unknown flag, a flag without its value, or an unknown action.
    """
    flags = Flags()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name = arg.lstrip("-")
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in _BOOL_FLAGS:
            on = value is None or value.lower() in {"1", "t", "true"}
            if value is not None and value.lower() not in {"0", "1", "t", "f", "true", "false"}:
                msg = f'invalid boolean value "{value}" for -{name}'
                raise UsageError(msg)
            setattr(flags, {"debug": "debug", "v": "version"}.get(name, name), on)
        elif name in _VALUE_FLAGS:
            if value is None:
                i += 1
                if i >= len(argv):
                    msg = f"flag needs an argument: -{name}"
                    raise UsageError(msg)
                value = argv[i]
            setattr(flags, name.replace("-", "_"), value)
        else:
            msg = f"flag provided but not defined: -{name}"
            raise UsageError(msg)
        i += 1
    rest = argv[i:]
    if rest:
        flags.action, flags.extra = rest[0], rest[1:]
    if flags.action not in {"", "start", "delete"}:
        msg = f"unknown action {flags.action!r} (expected start or delete)"
        raise UsageError(msg)
    return flags


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
    if not flags.namespace:
        flags.namespace = os.environ.get("NAMESPACE", "")
    if not flags.namespace:
        sys.stderr.write("shim namespace cannot be empty\n")
        return 1
    if flags.action == "start":
        from pycontainerd.runtime.shim import bootstrap

        return bootstrap.start(flags)
    if flags.action == "delete":
        from pycontainerd.runtime.shim import bootstrap

        return bootstrap.delete(flags)
    from pycontainerd.runtime.shim import server

    return server.serve(flags)


if __name__ == "__main__":
    sys.exit(main())
