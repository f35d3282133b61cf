"""Bad client arguments are InvalidArgumentError (errdefs), with config's texts."""

from __future__ import annotations

from typing import Any

import pytest

from pycontainerd.client.client import Client
from pycontainerd.config.errors import ConfigError
from pycontainerd.core.errdefs import InvalidArgumentError


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"address": ""}, "address cannot be empty: invalid argument"),
        ({"address": "http://127.0.0.1:1"}, 'unsupported address scheme "http"'),
        ({"address": "/x.sock", "namespace": ""}, "namespace cannot be empty: invalid argument"),
        ({"address": "/x.sock", "connect_timeout": "soon"}, 'invalid duration "soon"'),
    ],
)
def test_bad_arguments_are_invalid_argument(kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        Client(**kwargs)
    err = excinfo.value
    assert text in str(err)
    assert str(err).count(": invalid argument") == 1
    assert isinstance(err.__cause__, ConfigError)
