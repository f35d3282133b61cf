"""Label size validation."""

from __future__ import annotations

import pytest

from pycontainerd.core import labels
from pycontainerd.core.errdefs import InvalidArgumentError


def test_at_limit_is_fine() -> None:
    labels.validate("k" * 96, "v" * 4000)


def test_over_limit_message() -> None:
    key = "k" * 100
    with pytest.raises(InvalidArgumentError) as excinfo:
        labels.validate(key, "v" * 3997)
    assert str(excinfo.value) == (
        "label key and value length (4097 bytes) greater than maximum size (4096 bytes), "
        f"key: {'k' * 64}: invalid argument"
    )


def test_short_key_shown_whole() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\(4097 bytes\).*key: short: invalid"):
        labels.validate("short", "v" * 4092)


def test_counts_utf8_bytes() -> None:
    with pytest.raises(InvalidArgumentError, match=r"\(4098 bytes\)"):
        labels.validate("k", "é" * 2048 + "x")


def test_validate_all_reports_bad_one() -> None:
    labels.validate_all({"a": "b", "c": ""})
    with pytest.raises(InvalidArgumentError, match="key: big"):
        labels.validate_all({"a": "b", "big": "x" * 5000})
