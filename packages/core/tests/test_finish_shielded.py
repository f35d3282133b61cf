"""finish_shielded: a clean-up step ends before its caller's cancellation goes on."""

from __future__ import annotations

import asyncio

import pytest

from pycontainerd.core.closing import finish_shielded


async def test_cancelled_caller_waits_for_the_step_then_is_cancelled() -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    steps: list[str] = []

    async def step() -> None:
        steps.append("started")
        started.set()
        await release.wait()
        steps.append("finished")

    async def caller() -> None:
        try:
            raise RuntimeError("bad bytes")
        except RuntimeError:
            await finish_shielded(step())
            raise

    task = asyncio.create_task(caller())
    await asyncio.wait_for(started.wait(), 10)
    assert steps == ["started"]
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # a bare shield would have let it go here
    task.cancel()  # a second cancellation does not cut it short either
    await asyncio.sleep(0.01)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["started", "finished"]


async def test_result_and_errors_of_the_step_pass_through() -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 7

    async def failing() -> None:
        await asyncio.sleep(0)
        raise LookupError("gone")

    assert await finish_shielded(value()) == 7
    with pytest.raises(LookupError, match="gone"):
        await finish_shielded(failing())


async def test_a_step_that_fails_while_the_caller_is_cancelled_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    started = asyncio.Event()

    async def failing() -> None:
        started.set()
        await release.wait()
        raise LookupError("gone")

    task = asyncio.create_task(finish_shielded(failing()))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    await asyncio.sleep(0)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "never retrieved" not in caplog.text
