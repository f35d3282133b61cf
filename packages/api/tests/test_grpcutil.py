"""Namespace and lease headers made current for servicers, also across a stream's yields."""

from __future__ import annotations

import asyncio
import contextvars
import gc
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.api.grpcutil import CallScope, header, lease_of, namespace_of, request_scope
from pycontainerd.core import namespaces

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable


class Call:
    """The one servicer-context method these helpers read."""

    def __init__(self, *metadata: tuple[str, str]) -> None:
        self.metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata


CALL: Any = Call(
    ("user-agent", "test"),
    ("containerd-namespace", ""),  # empty values are skipped
    ("containerd-namespace", "team-a"),
    ("containerd-namespace", "team-b"),
    ("containerd-lease", "pull-1"),
)


def test_headers() -> None:
    assert namespace_of(CALL) == "team-a"  # the first non-empty value wins
    assert lease_of(CALL) == "pull-1"
    assert header(CALL, "x-missing") is None
    assert namespace_of(Call()) is None  # type: ignore[arg-type]
    assert CallScope.of(CALL) == CallScope("team-a", "pull-1")


def test_request_scope_sets_and_restores() -> None:
    with request_scope(CALL):
        assert (namespaces.namespace(), namespaces.lease()) == ("team-a", "pull-1")
    assert (namespaces.namespace(), namespaces.lease()) == (None, None)


async def numbers(seen: list[tuple[str | None, str | None]]) -> AsyncIterator[int]:
    """A store's walk: records the namespace and lease each step runs under."""
    for i in range(3):
        seen.append((namespaces.namespace(), namespaces.lease()))
        yield i


async def test_iterate_sets_the_scope_for_each_step_only() -> None:
    seen: list[tuple[str | None, str | None]] = []
    got = []
    async for i in CallScope.of(CALL).iterate(numbers(seen)):
        assert namespaces.namespace() is None  # not while the handler holds the item
        got.append(i)
    assert got == [0, 1, 2]
    assert seen == [("team-a", "pull-1")] * 3


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    yield seen
    loop.set_exception_handler(previous)


async def abandon_mid_stream(handler: Callable[[], AsyncIterator[int]]) -> None:
    """What grpc does when a client cancels a stream suspended at ``yield``.

    The first message is produced in the call's own task and context; then the
    generator is dropped, and the loop closes it from a new task.
    """
    held = [handler()]

    async def first() -> None:
        assert await anext(held[0]) == 0

    await asyncio.create_task(first(), context=contextvars.Context())
    held.clear()
    for _ in range(5):  # the finalizer's aclose task runs, then is collected
        gc.collect()
        await asyncio.sleep(0)


async def test_abandoned_stream_leaves_no_task_error(loop_errors: list[dict[str, Any]]) -> None:
    def handler() -> AsyncIterator[int]:
        return CallScope.of(CALL).iterate(numbers([]))

    await abandon_mid_stream(handler)
    assert loop_errors == []


async def test_scope_held_across_yield_is_the_error_avoided(
    loop_errors: list[dict[str, Any]],
) -> None:
    # The pattern the services used before: the check above can see the error.
    async def handler() -> AsyncIterator[int]:
        with request_scope(CALL):
            async for i in numbers([]):
                yield i

    await abandon_mid_stream(handler)
    assert any("different Context" in str(ctx.get("exception")) for ctx in loop_errors)
