"""Daemon logging in containerd's formats, on top of the stdlib ``logging`` module.

containerd logs through logrus with a fixed timestamp layout (always nine
fractional digits, UTC as ``Z``). Three shapes exist:

* text, not a terminal: ``time="…" level=info msg="…" key=value`` with
  ``time level msg`` first, the other fields sorted and values quoted only when
  they hold characters outside logrus's safe set;
* text on a terminal: ``INFO[<timestamp>] <msg padded to 44>  key=value`` with
  ANSI colours and the level cut to four letters;
* JSON: one object per line with sorted keys.

Every ``logging.getLogger(__name__)`` in any pycontainerd package goes through
the handler :func:`setup` installs. Structured fields ride in
``extra={"fields": {...}}``; :func:`fields` builds that mapping.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

TRACE: Final = 5
PANIC: Final = 60

logging.addLevelName(TRACE, "TRACE")
logging.addLevelName(PANIC, "PANIC")

_LEVELS: Final[dict[str, int]] = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": PANIC,
}

FORMATS: Final = ("text", "json")


class LogConfigError(ValueError):
    """An invalid level or format; ``str()`` is containerd's text for it."""


def parse_level(name: str) -> int:
    """Map a logrus level name (``trace`` … ``panic``, ``warning``) to a stdlib level.

    Raises:
        LogConfigError: ``not a valid logrus Level: "<name>"``.
    """
    level = _LEVELS.get(name.lower())
    if level is None:
        msg = f"not a valid logrus Level: {go_quote(name)}"
        raise LogConfigError(msg)
    return level


def level_name(levelno: int) -> str:  # noqa: PLR0911 - one branch per level
    """The logrus spelling of a stdlib level (``warning``, ``fatal``, ...)."""
    if levelno >= PANIC:
        return "panic"
    if levelno >= logging.CRITICAL:
        return "fatal"
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


def fields(**values: object) -> dict[str, dict[str, object]]:
    """``extra=`` for a log call carrying structured fields.

    Example:
        ``log.info("serving...", extra=fields(address=path))``
    """
    return {"fields": values}


def format_timestamp(ns: int) -> str:
    """``2006-01-02T15:04:05.000000000Z`` for ``ns`` nanoseconds since the epoch, in UTC."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


_GO_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(text: str) -> str:
    """Quote ``text`` the way Go's ``%q`` (``strconv.Quote``) does."""
    out = ['"']
    for ch in text:
        esc = _GO_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch.isprintable() or ch == " ":
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


_SAFE: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._/@^+")


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else _stringify(value)
    if all(ch in _SAFE for ch in text):
        return text
    return go_quote(text)


def _stringify(value: object) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _record_ns(record: logging.LogRecord) -> int:
    ns = getattr(record, "time_ns", None)
    if isinstance(ns, int):
        return ns
    return int(record.created * 1_000_000_000)


def _record_fields(record: logging.LogRecord) -> dict[str, object]:
    data: dict[str, object] = {}
    extra = getattr(record, "fields", None)
    if isinstance(extra, dict):
        data.update(extra)
    if record.exc_info and record.exc_info[1] is not None and "error" not in data:
        data["error"] = record.exc_info[1]
    return data


class TextFormatter(logging.Formatter):
    """logrus's text formatter with containerd's settings (full fixed-width timestamps).

    Args:
        color: the terminal shape (``INFO[…] msg  key=value`` with ANSI colours).
    """

    _COLORS: Final = {"trace": 37, "debug": 37, "info": 36, "warning": 33}

    def __init__(self, *, color: bool = False) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        stamp = format_timestamp(_record_ns(record))
        level = level_name(record.levelno)
        message = record.getMessage().removesuffix("\n")
        data = _record_fields(record)
        keys = sorted(data)
        if self.color:
            color = self._COLORS.get(level, 31)
            head = f"\x1b[{color}m{level.upper()[:4]}\x1b[0m[{stamp}] {message:<44} "
            tail = "".join(f" \x1b[{color}m{k}\x1b[0m={_text_value(data[k])}" for k in keys)
            return head + tail
        parts = [f"time={go_quote(stamp)}", f"level={level}"]
        if message:
            parts.append(f"msg={_text_value(message)}")
        parts.extend(f"{k}={_text_value(data[k])}" for k in keys)
        return " ".join(parts)


def _json_default(value: object) -> object:
    return _stringify(value)


class JSONFormatter(logging.Formatter):
    """logrus's JSON formatter: one object per line, keys sorted, HTML characters escaped."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {}
        for key, value in _record_fields(record).items():
            data[key] = str(value) if isinstance(value, BaseException) else value
        data["level"] = level_name(record.levelno)
        data["msg"] = record.getMessage()
        data["time"] = format_timestamp(_record_ns(record))
        text = json.dumps(
            data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
        )
        return (
            text.replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
            .replace("\u2028", "\\u2028")
            .replace("\u2029", "\\u2029")
        )


_HANDLER_NAME: Final = "pycontainerd-daemon"


def _install_record_factory() -> None:
    base: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
    if getattr(base, "_pycontainerd", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        record.time_ns = time.time_ns()
        return record

    factory._pycontainerd = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def make_formatter(fmt: str, stream: IO[str]) -> logging.Formatter:
    """The formatter for ``[debug] format`` writing to ``stream``.

    Raises:
        LogConfigError: ``unknown log format: <fmt>``.
    """
    if fmt == "json":
        return JSONFormatter()
    if fmt in ("text", ""):
        isatty = getattr(stream, "isatty", None)
        return TextFormatter(color=bool(isatty and isatty()))
    msg = f"unknown log format: {fmt}"
    raise LogConfigError(msg)


def setup(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """Route every stdlib logger to ``stream`` (stderr) in containerd's format.

    Raises:
        LogConfigError: the level or the format is not valid (containerd's texts).
    """
    out = stream if stream is not None else sys.stderr
    levelno = parse_level(level)
    formatter = make_formatter(fmt, out)
    _install_record_factory()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(levelno)
    logging.captureWarnings(True)


def level_fields(mapping: Mapping[str, object]) -> dict[str, dict[str, object]]:
    """``extra=`` for a log call from an existing mapping of fields."""
    return {"fields": dict(mapping)}
