"""Error kinds: sentinels, str() and cause-chain lookup."""

from __future__ import annotations

import pytest

from pycontainerd.core import errdefs
from pycontainerd.core.errdefs import (
    ALL_KINDS,
    ContainerdError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)


def test_str_appends_sentinel() -> None:
    assert str(NotFoundError('image "x"')) == 'image "x": not found'


def test_empty_message_is_sentinel() -> None:
    assert str(InvalidArgumentError()) == "invalid argument"


def test_sentinel_not_doubled() -> None:
    assert str(NotFoundError("blob: not found")) == "blob: not found"
    assert str(NotFoundError("not found")) == "not found"


def test_message_kept() -> None:
    assert FailedPreconditionError("busy").message == "busy"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_kind_is_a_containerd_error_with_its_own_sentinel(
    kind: type[ContainerdError],
) -> None:
    assert issubclass(kind, ContainerdError)
    assert str(kind("x")) == f"x: {kind.sentinel}"


def test_sentinels_unique() -> None:
    sentinels = [k.sentinel for k in ALL_KINDS]
    assert len(set(sentinels)) == len(sentinels)


def test_upstream_sentinel_texts() -> None:
    assert errdefs.UnimplementedError.sentinel == "not implemented"
    assert errdefs.AlreadyExistsError.sentinel == "already exists"
    assert errdefs.UnavailableError.sentinel == "unavailable"


def test_is_kind_follows_causes() -> None:
    outer = RuntimeError("wrapped")
    outer.__cause__ = NotFoundError("inner")
    assert errdefs.is_kind(outer, NotFoundError)
    assert not errdefs.is_kind(outer, InvalidArgumentError)


def _fail_while_handling() -> None:
    try:
        raise NotFoundError("inner")
    except NotFoundError:
        raise RuntimeError("during handling")  # noqa: B904 - implicit context on purpose


def test_is_kind_follows_implicit_context() -> None:
    with pytest.raises(RuntimeError) as excinfo:
        _fail_while_handling()
    assert errdefs.is_kind(excinfo.value, NotFoundError)


def test_is_kind_survives_cycles() -> None:
    a = ValueError("a")
    b = ValueError("b")
    a.__cause__ = b
    b.__cause__ = a
    assert not errdefs.is_kind(a, NotFoundError)
