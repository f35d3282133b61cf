"""Validation of identifiers: namespaces, container and task ids, lease ids, keys.

containerd applies one rule to every name that may end up as a path component
or in a URL: runs of ASCII letters and digits, joined by single ``.``, ``_``
or ``-``, at most 76 bytes long. The messages are containerd's, so clients
that match on them keep working.
"""

from __future__ import annotations

import re
from typing import Final

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.gostr import go_quote

MAX_LENGTH: Final = 76
PATTERN: Final = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"
_REGEX: Final = re.compile(PATTERN)


def is_valid(s: str) -> bool:
    """Whether ``s`` passes ``validate``."""
    try:
        validate(s)
    except InvalidArgumentError:
        return False
    return True


def validate(s: str) -> str:
    """Check that ``s`` is a valid identifier and return it.

    The length is counted in UTF-8 bytes, as containerd counts it; the length
    check comes before the pattern check, so an over-long name is reported as
    such even when it also contains bad characters.

    Raises:
        InvalidArgumentError: ``identifier must not be empty``,
            ``identifier "<s>" greater than maximum length (76 characters)``
            or ``identifier "<s>" must match <PATTERN>``.
    """
    if not s:
        msg = "identifier must not be empty"
        raise InvalidArgumentError(msg)
    if len(s.encode("utf-8", "surrogatepass")) > MAX_LENGTH:
        msg = f"identifier {go_quote(s)} greater than maximum length ({MAX_LENGTH} characters)"
        raise InvalidArgumentError(msg)
    if _REGEX.fullmatch(s) is None:
        msg = f"identifier {go_quote(s)} must match {PATTERN}"
        raise InvalidArgumentError(msg)
    return s
