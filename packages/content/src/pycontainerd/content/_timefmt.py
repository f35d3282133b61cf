"""Time and duration text as containerd writes it (RFC 3339 with nanoseconds, Go durations).

Pure Python; importing this module must not import grpc.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

_RFC3339 = re.compile(
    r"^(?P<base>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d{1,9}))?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})$"
)


def format_rfc3339(when: datetime) -> str:
    """Format ``when`` like Go's ``time.RFC3339Nano`` in UTC (trailing zeros trimmed)."""
    when = when.astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += "." + f"{when.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse RFC 3339 text with up to nine fractional digits (Go writes nanoseconds).

    Raises:
        ValueError: ``text`` is not RFC 3339.
    """
    match = _RFC3339.match(text.strip())
    if match is None:
        msg = f"invalid RFC 3339 time {text!r}"
        raise ValueError(msg)
    frac = (match["frac"] or "").ljust(6, "0")[:6]
    tz = match["tz"]
    iso = f"{match['base']}.{frac}{'+00:00' if tz == 'Z' else tz}"
    return datetime.fromisoformat(iso).astimezone(UTC)


def format_go_time(when: datetime) -> str:
    """Format ``when`` like Go's ``time.Time.String`` in UTC, without the monotonic part."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def format_go_duration(seconds: float) -> str:  # noqa: PLR0911 - one return per unit
    """Format a duration the way Go's ``time.Duration.String`` does (``1.5s``, ``815.48ms``)."""
    if seconds < 0:
        return "-" + format_go_duration(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1e-6:
        return f"{round(seconds * 1e9)}ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3f}".rstrip("0").rstrip(".") + "µs"
    if seconds < 1:
        return f"{seconds * 1e3:.6f}".rstrip("0").rstrip(".") + "ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{out}"
    if minutes:
        return f"{int(minutes)}m{out}"
    return out
