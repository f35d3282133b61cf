"""``AsyncClosing`` and ``Closing``: leaving the block closes the object, however it ends."""

from __future__ import annotations

import pytest

from pycontainerd.core.closing import AsyncClosing, Closing


class _Resource(AsyncClosing):
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_the_block_gets_the_object_and_its_exit_closes_it() -> None:
    resource = _Resource()
    async with resource as entered:
        assert entered is resource
        assert resource.closed == 0
    assert resource.closed == 1


async def test_an_error_in_the_block_closes_it_and_propagates() -> None:
    resource = _Resource()
    with pytest.raises(KeyError):
        async with resource:
            raise KeyError("x")
    assert resource.closed == 1


async def test_a_class_without_aclose_fails_on_exit() -> None:
    with pytest.raises(NotImplementedError):
        async with AsyncClosing():
            pass


class _SyncResource(Closing):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def _fail_inside(resource: _SyncResource) -> None:
    with resource:
        raise KeyError("x")


def test_a_with_block_gets_the_object_and_its_exit_closes_it_even_on_error() -> None:
    resource = _SyncResource()
    with resource as entered:
        assert entered is resource
        assert resource.closed == 0
    assert resource.closed == 1
    with pytest.raises(KeyError):
        _fail_inside(resource)
    assert resource.closed == 2
