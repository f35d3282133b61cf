"""Go-style durations (``"100ms"``, ``"1h2m"``, ``"0s"``) as used in containerd configs.

containerd writes timeouts and intervals as Go ``time.Duration`` strings; this
module reads and writes the same syntax so a config copied from containerd
keeps working, and so other packages (the GC scheduler, the runtime) can parse
their own duration settings the same way.

Units: ``ns``, ``us`` (also ``µs``/``μs``), ``ms``, ``s``, ``m``, ``h``. A
number may have a fraction (``1.5h``); several terms add up (``1h2m3s``); a
sign may lead; a bare ``0`` is allowed. Nothing else is: a number without unit
or an empty string is an error, as in Go.

Importing this module must not import grpc.
"""

from __future__ import annotations

import re
from typing import Final

from pycontainerd.config.errors import ConfigValueError

_NS_PER_UNIT: Final[dict[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}

# One term: digits with an optional fraction (either side of the dot may be
# empty, not both), then a run of letters that must name a unit.
_TERM: Final = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]*)")

_MAX_NS: Final = (1 << 63) - 1  # Go's Duration is an int64 of nanoseconds


def parse_duration_ns(text: str) -> int:
    """Parse a Go duration string into whole nanoseconds.

    Args:
        text: For example ``"5s"``, ``"1h2m"``, ``"1.5ms"``, ``"-3s"``, ``"0"``.

    Returns:
        The duration in nanoseconds (fractions below a nanosecond are dropped).

    Raises:
        ConfigValueError: ``text`` is not a duration.
    """
    rest = text
    negative = False
    if rest[:1] in ("+", "-"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ConfigValueError(f'invalid duration "{text}"')
    total = 0
    pos = 0
    while pos < len(rest):
        match = _TERM.match(rest, pos)
        if match is None:
            raise ConfigValueError(f'invalid duration "{text}"')
        number, unit = match.groups()
        if not unit:
            raise ConfigValueError(f'missing unit in duration "{text}"')
        scale = _NS_PER_UNIT.get(unit)
        if scale is None:
            raise ConfigValueError(f'unknown unit "{unit}" in duration "{text}"')
        whole, _, fraction = number.partition(".")
        value = int(whole or "0") * scale
        if fraction:
            value += int(fraction) * scale // 10 ** len(fraction)
        total += value
        if total > _MAX_NS:
            raise ConfigValueError(f'invalid duration "{text}": out of range')
        pos = match.end()
    return -total if negative else total


def parse_duration(text: str) -> float:
    """Parse a Go duration string into seconds.

    Args:
        text: For example ``"100ms"`` (0.1), ``"1h2m"`` (3720.0), ``"0s"`` (0.0).

    Returns:
        The duration in seconds, ready for ``asyncio.sleep`` or ``wait_for``.

    Raises:
        ConfigValueError: ``text`` is not a duration.
    """
    return parse_duration_ns(text) / 1e9


def _format_fraction(value: int, digits: int) -> str:
    """``value`` scaled down by ``10**digits``, without trailing zeros."""
    whole, fraction = divmod(value, 10**digits)
    text = str(whole)
    if fraction:
        text += "." + str(fraction).rjust(digits, "0").rstrip("0")
    return text


def format_duration_ns(nanoseconds: int) -> str:
    """Format nanoseconds the way Go's ``Duration.String`` does.

    Examples: ``0`` -> ``"0s"``, ``1_500_000`` -> ``"1.5ms"``,
    ``3_720_000_000_000`` -> ``"1h2m0s"``.
    """
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    ns = abs(nanoseconds)
    if ns < 1_000:
        return f"{sign}{ns}ns"
    if ns < 1_000_000:
        return f"{sign}{_format_fraction(ns, 3)}\u00b5s"
    if ns < 1_000_000_000:
        return f"{sign}{_format_fraction(ns, 6)}ms"
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _format_fraction(rest, 9) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def format_duration(seconds: float) -> str:
    """Format seconds as a Go duration string (``0.1`` -> ``"100ms"``)."""
    return format_duration_ns(round(seconds * 1e9))
