"""Human-readable sizes, durations and times as ``ctr`` prints them.

``human_size``/``human_duration`` follow docker's go-units (``HumanSize``,
``HumanDuration``), ``bytes_size`` follows containerd's ``progress.Bytes``,
``rfc3339``/``rfc3339nano`` Go's time layouts. Importing this module must not
import grpc.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

_DECIMAL = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_BINARY = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def _scale(size: float, base: float, units: tuple[str, ...]) -> tuple[float, str]:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return size, units[i]


def human_size(size: float) -> str:
    """Decimal size with 4 significant digits: ``3B``, ``1.235kB`` (go-units ``HumanSize``)."""
    value, unit = _scale(float(size), 1000.0, _DECIMAL)
    return f"{value:.4g}{unit}"


def bytes_size(size: float) -> str:
    """Binary size with one decimal: ``840.0 B``, ``1.2 MiB`` (containerd ``progress.Bytes``)."""
    value, unit = _scale(float(size), 1024.0, _BINARY)
    return f"{value:.1f} {unit}"


def human_duration(d: timedelta) -> str:  # noqa: PLR0911 - go-units' ladder
    """A rough duration: ``Less than a second``, ``5 minutes``... (go-units ``HumanDuration``)."""
    seconds = int(d.total_seconds())
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(d.total_seconds() / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = _round_half_away(d.total_seconds() / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(d.total_seconds() / 3600) // 24 // 365} years"


def _round_half_away(x: float) -> int:
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def since(t: datetime) -> timedelta:
    """Time elapsed since ``t``."""
    return datetime.now(UTC) - t


def _zone(dt: datetime) -> str:
    offset = dt.utcoffset() or timedelta()
    if offset == timedelta():
        return "Z"
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{sign}{total // 3600:02d}:{total % 3600 // 60:02d}"


def rfc3339(dt: datetime, *, local: bool = False) -> str:
    """Go's ``time.RFC3339`` layout (``Z`` for UTC); ``local`` converts to local time first."""
    if local:
        dt = dt.astimezone()
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + _zone(dt)


def rfc3339nano(dt: datetime) -> str:
    """Go's ``time.RFC3339Nano`` layout: fractional seconds without trailing zeros."""
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + _zone(dt)


def go_time_string(dt: datetime) -> str:
    """Go's ``time.Time.String()``: ``2006-01-02 15:04:05.999999999 +0000 UTC``."""
    frac = f"{dt.microsecond:06d}".rstrip("0")
    offset = dt.utcoffset() or timedelta()
    total = int(offset.total_seconds())
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    zone = dt.tzname() or ""
    if offset == timedelta() and zone in ("", "UTC", "UTC+00:00"):
        zone = "UTC"
    stamp = dt.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "")
    return f"{stamp} {sign}{total // 3600:02d}{total % 3600 // 60:02d} {zone}"
