"""ConfigError: a ValueError whose text reads like an errdefs InvalidArgumentError."""

from __future__ import annotations

import pytest

from pycontainerd.config import ConfigError, ConfigValueError
from pycontainerd.config.duration import parse_duration


def test_message_names_file_and_key() -> None:
    err = ConfigError("config.toml", "grpc.uid", 'expected an integer, got "abc"')
    assert isinstance(err, ValueError)
    assert (err.file, err.key, err.problem) == ("config.toml", "grpc.uid", err.problem)
    assert err.message == 'config.toml: grpc.uid: expected an integer, got "abc"'
    assert str(err) == f"{err.message}: invalid argument"


@pytest.mark.parametrize(
    ("problem", "text"),
    [
        ("", "invalid argument"),
        ("invalid argument", "invalid argument"),
        ("bad: invalid argument", "bad: invalid argument"),
        ("bad", "bad: invalid argument"),
    ],
)
def test_sentinel_is_not_doubled(problem: str, text: str) -> None:
    assert str(ConfigValueError(problem)) == text


def test_value_error_has_no_file_or_key() -> None:
    with pytest.raises(ConfigValueError) as excinfo:
        parse_duration("soon")
    err = excinfo.value
    assert isinstance(err, ConfigError)
    assert (err.file, err.key) == ("", "")
    assert err.message == err.problem == 'invalid duration "soon"'
