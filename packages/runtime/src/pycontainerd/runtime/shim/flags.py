"""The shim's command line, parsed the way Go's ``flag`` package does.

One or two dashes, ``-name value`` or ``-name=value``, booleans without a
value, and parsing stops at the first positional argument, the action
(``start``, ``delete`` or none: serve). Its own module so that
:mod:`~pycontainerd.runtime.shim.main` (which dispatches on the action) and the
modules it dispatches to (``bootstrap``, ``server``) both import the parsed
:class:`Flags` without importing each other.

Pure standard library, and small: the ``start`` path of a shim that is
already running must cost as little as possible.
"""

from __future__ import annotations

__all__ = ["Flags", "UsageError", "parse_args"]

_BOOL_FLAGS = frozenset({"debug", "v", "info"})
SPARE_FD_ENV = "PYCONTAINERD_SHIM_SPARE_FD"
"""Set for a spare shim (:mod:`.spare`): its end of the socketpair to the daemon."""
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
