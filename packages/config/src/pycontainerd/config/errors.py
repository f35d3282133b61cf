"""The one error type of the config package.

Every problem found while reading a config file (bad TOML, unknown key, wrong
type, bad plugin URI, missing import, import cycle, unsupported version) is a
:class:`ConfigError`. Its message starts with the file and the key path, so a
user can go straight to the offending line::

    config.toml: grpc.uid: expected an integer, got "abc": invalid argument

Importing this module must not import grpc.
"""

from __future__ import annotations

from pycontainerd.core.errdefs import InvalidArgumentError


class ConfigError(InvalidArgumentError):
    """A configuration file (or value) is invalid.

    Attributes:
        file: The file the problem is in, as it was named (``""`` when the
            value did not come from a file).
        key: The dotted key path inside that file (``grpc.uid``,
            ``disabled_plugins[0]``), or ``""`` for the file as a whole.
        problem: What is wrong, without file and key.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(": ".join(part for part in (file, key, problem) if part))
