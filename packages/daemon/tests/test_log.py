from __future__ import annotations

import io
import json
import logging
import re

import pytest

from pycontainerd.daemon.log import (
    JSONFormatter,
    LogConfigError,
    TextFormatter,
    fields,
    format_timestamp,
    make_formatter,
    parse_level,
    setup,
)

TS = 1_795_964_683_395_430_547  # 2026-11-29T15:04:43.395430547Z
TEXT_LINE = re.compile(
    r'^time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)" level=(\w+)(?: msg=(.*?))?((?: \S+=\S+)*)$'
)


def record(msg: str, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("x", level, __file__, 1, msg, None, None)
    rec.time_ns = TS
    if extra:
        rec.fields = extra
    return rec


def test_timestamp_has_nine_fraction_digits_and_z() -> None:
    assert format_timestamp(TS) == "2026-11-29T15:04:43.395430547Z"
    assert format_timestamp(1_795_964_683_000_000_000) == "2026-11-29T15:04:43.000000000Z"


def test_text_line_matches_logrus_non_tty() -> None:
    line = TextFormatter().format(
        record("starting containerd", version="0.1.0", revision="abc", empty="", spaced="a b")
    )
    assert line == (
        'time="2026-11-29T15:04:43.395430547Z" level=info msg="starting containerd" '
        'empty= revision=abc spaced="a b" version=0.1.0'
    )
    assert TEXT_LINE.match(line)


def test_text_quoting_only_when_needed() -> None:
    fmt = TextFormatter()
    assert fmt.format(record("serving...", address="/run/x.sock")).endswith(
        "msg=serving... address=/run/x.sock"
    )
    line = fmt.format(record('loading plugin "x"...', logging.WARNING, error='a "q"\n'))
    assert 'level=warning msg="loading plugin \\"x\\"..." error="a \\"q\\"\\n"' in line


def test_text_tty_shape() -> None:
    line = TextFormatter(color=True).format(record("starting containerd", revision="abc"))
    plain = re.sub(r"\x1b\[\d+m", "", line)
    assert (
        plain
        == "INFO[2026-11-29T15:04:43.395430547Z] "
        + "starting containerd".ljust(44)
        + "  revision=abc"
    )
    assert line.startswith("\x1b[36mINFO\x1b[0m[")
    warn = re.sub(r"\x1b\[\d+m", "", TextFormatter(color=True).format(record("w", logging.WARNING)))
    assert warn.startswith("WARN[")


def test_json_keys_sorted_and_error_string() -> None:
    rec = record("failed to load plugin x", logging.ERROR, error=ValueError("bad <thing>"), b=1)
    line = JSONFormatter().format(rec)
    assert line == (
        '{"b":1,"error":"bad \\u003cthing\\u003e","level":"error",'
        '"msg":"failed to load plugin x","time":"2026-11-29T15:04:43.395430547Z"}'
    )
    assert json.loads(line)["error"] == "bad <thing>"


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("trace", 5),
        ("debug", 10),
        ("info", 20),
        ("warn", 30),
        ("warning", 30),
        ("error", 40),
        ("fatal", 50),
        ("panic", 60),
        ("INFO", 20),
    ],
)
def test_parse_level(name: str, level: int) -> None:
    assert parse_level(name) == level


def test_invalid_level_and_format_use_upstream_text() -> None:
    with pytest.raises(LogConfigError, match=r'^not a valid logrus Level: "foo"$'):
        parse_level("foo")
    with pytest.raises(LogConfigError, match=r"^unknown log format: xml$"):
        make_formatter("xml", io.StringIO())


def test_setup_routes_every_logger() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup("debug", "json", out)
        logging.getLogger("pycontainerd.somewhere").debug("hello %s", "w", extra=fields(k="v"))
        logging.getLogger("pycontainerd.somewhere").log(5, "too verbose")
        data = json.loads(out.getvalue().strip())
        assert data["msg"] == "hello w"
        assert data["level"] == "debug"
        assert data["k"] == "v"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", data["time"])
    finally:
        logging.captureWarnings(False)
        for h in list(root.handlers):
            if h not in saved[1]:
                root.removeHandler(h)
        root.setLevel(saved[0])
