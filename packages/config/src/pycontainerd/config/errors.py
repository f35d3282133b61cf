"""The error types of the config package.

Every problem found while reading a config file (bad TOML, unknown key, wrong
type, bad plugin URI, missing import, import cycle, unsupported version) is a
:class:`ConfigError`. Its message starts with the file and the key path, so a
user can go straight to the offending line::

    config.toml: grpc.uid: expected an integer, got "abc": invalid argument

A bad value handed to a helper (a Go duration, a client address) is a
:class:`ConfigValueError`, a :class:`ConfigError` without file and key.

Both are ``ValueError`` subclasses, not pycontainerd errdefs: this
distribution depends on no other pycontainerd distribution. Their text ends
with ``: invalid argument`` as an errdefs ``InvalidArgumentError`` does, so a
caller that needs an errdefs kind converts at its edge without changing what
the user reads: ``raise InvalidArgumentError(exc.message) from exc``.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import Final

SENTINEL: Final = "invalid argument"
"""The text every config error ends with (containerd's ``ErrInvalidArgument``)."""


class ConfigError(ValueError):
    """A configuration file (or value) is invalid.

    Attributes:
        file: The file the problem is in, as it was named (``""`` when the
            value did not come from a file).
        key: The dotted key path inside that file (``grpc.uid``,
            ``disabled_plugins[0]``), or ``""`` for the file as a whole.
        problem: What is wrong, without file and key.
        message: File, key and problem joined by ``": "``, without the
            trailing ``": invalid argument"`` that ``str()`` adds.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        self.message = ": ".join(part for part in (file, key, problem) if part)
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.message:
            return SENTINEL
        if self.message == SENTINEL or self.message.endswith(f": {SENTINEL}"):
            return self.message
        return f"{self.message}: {SENTINEL}"


class ConfigValueError(ConfigError):
    """A value outside any file is invalid (a duration, an address, a namespace)."""

    def __init__(self, problem: str) -> None:
        super().__init__("", "", problem)
