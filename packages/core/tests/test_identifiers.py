"""Identifier validation: containerd's rule and messages."""

from __future__ import annotations

import pytest

from pycontainerd.core import identifiers
from pycontainerd.core.errdefs import InvalidArgumentError

PATTERN = "^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$"


@pytest.mark.parametrize(
    "name",
    ["a", "default", "k8s.io", "A-b_c.d", "0", "1.2.3", "abc-123", "x" * 76, "MiXeD"],
)
def test_valid(name: str) -> None:
    assert identifiers.validate(name) == name
    assert identifiers.is_valid(name)


def test_empty() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        identifiers.validate("")
    assert str(excinfo.value) == "identifier must not be empty: invalid argument"


def test_too_long() -> None:
    name = "a" * 77
    with pytest.raises(InvalidArgumentError) as excinfo:
        identifiers.validate(name)
    assert str(excinfo.value) == (
        f'identifier "{name}" greater than maximum length (76 characters): invalid argument'
    )


def test_length_counts_bytes_and_comes_first() -> None:
    name = "é" * 40  # 80 bytes
    with pytest.raises(InvalidArgumentError, match="greater than maximum length"):
        identifiers.validate(name)


@pytest.mark.parametrize(
    "name", ["bad_name!", "-a", "a-", "a..b", "a._b", ".a", "a b", "a/b", "é", "a\n"]
)
def test_pattern(name: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        identifiers.validate(name)
    assert str(excinfo.value).endswith(f" must match {PATTERN}: invalid argument")
    assert not identifiers.is_valid(name)


def test_message_quotes_like_go() -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        identifiers.validate('bad "ns"\t')
    assert str(excinfo.value).startswith('identifier "bad \\"ns\\"\\t" must match ')
