"""Clean-up steps that finish before a cancellation goes on.

``asyncio.shield`` keeps a clean-up coroutine running when its caller is
cancelled, but the caller moves on at once and the clean-up finishes later in
a task of its own. A pull whose blob failed cancels its sibling fetches; with a
bare shield the sibling's ``abort`` of its ingest (or ``remove`` of its extract
snapshot) could still be under way when the pull had already raised, so the
caller saw what the pull promises to leave behind. :func:`finish_shielded`
waits for the clean-up, then re-raises the cancellation.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable

T = TypeVar("T")


async def finish_shielded(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if the calling task is cancelled meanwhile.

    Returns:
        What ``step`` returned.

    Raises:
        asyncio.CancelledError: the caller was cancelled while ``step`` ran
            (raised once ``step`` has finished).
        Exception: whatever ``step`` raised, when the caller was not cancelled.
    """
    task = asyncio.ensure_future(step)
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])  # cancelling the wait leaves the task running
        except asyncio.CancelledError as exc:
            interrupted = exc
    if interrupted is not None:
        if not task.cancelled():
            task.exception()  # retrieved, so not logged: the cancellation wins, as with a shield
        raise interrupted
    return task.result()
