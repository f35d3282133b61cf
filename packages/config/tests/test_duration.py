from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycontainerd.config.duration import (
    format_duration,
    format_duration_ns,
    parse_duration,
    parse_duration_ns,
)
from pycontainerd.config.errors import ConfigValueError


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("0s", 0),
        ("-0", 0),
        ("5s", 5_000_000_000),
        ("100ms", 100_000_000),
        ("1h2m", 3_720_000_000_000),
        ("1h2m3.5s", 3_723_500_000_000),
        ("1.5h", 5_400_000_000_000),
        (".5s", 500_000_000),
        ("1.s", 1_000_000_000),
        ("10us", 10_000),
        ("10\u00b5s", 10_000),
        ("10\u03bcs", 10_000),
        ("7ns", 7),
        ("+3m", 180_000_000_000),
        ("-3s", -3_000_000_000),
        ("1ms500us", 1_500_000),
    ],
)
def test_parse(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_duration(text) == pytest.approx(ns / 1e9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'invalid duration ""'),
        ("-", 'invalid duration "-"'),
        ("abc", 'invalid duration "abc"'),
        (".s", 'invalid duration ".s"'),
        ("5", 'missing unit in duration "5"'),
        ("1h5", 'missing unit in duration "1h5"'),
        ("5x", 'unknown unit "x" in duration "5x"'),
        ("5 s", 'unknown unit " s" in duration "5 s"'),
        ("9999999999h", 'invalid duration "9999999999h": out of range'),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigValueError) as excinfo:
        parse_duration(text)
    assert str(excinfo.value) == f"{message}: invalid argument"


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (7, "7ns"),
        (1_500, "1.5\u00b5s"),
        (1_500_000, "1.5ms"),
        (100_000_000, "100ms"),
        (5_000_000_000, "5s"),
        (60_000_000_000, "1m0s"),
        (3_720_000_000_000, "1h2m0s"),
        (3_723_500_000_000, "1h2m3.5s"),
        (-2_000_000_000, "-2s"),
    ],
)
def test_format_like_go(ns: int, text: str) -> None:
    assert format_duration_ns(ns) == text


def test_format_seconds() -> None:
    assert format_duration(0.1) == "100ms"
    assert format_duration(2) == "2s"


@given(st.integers(min_value=-(1 << 63) + 1, max_value=(1 << 63) - 1))
def test_format_then_parse_round_trips(ns: int) -> None:
    assert parse_duration_ns(format_duration_ns(ns)) == ns
