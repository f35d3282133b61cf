"""``AsyncClosing``: ``async with obj:`` ends with ``await obj.aclose()``; ``Closing``: ``with``.

The one ``__aenter__``/``__aexit__`` pair of the objects that own a
connection, a server or a stream and close it on leaving the block (the ttrpc
client and server, the registry resolver, event subscriptions, the client),
and the one ``__exit__`` of their blocking twins (the sync client). A class
whose entry does more (connects, starts a stream) overrides the entry only.

``finish_shielded``: a clean-up step that finishes before a cancellation goes
on. ``asyncio.shield`` keeps a step running when its caller is cancelled, but
the caller moves on at once and the step finishes later in a task of its own:
a pull whose blob failed cancels its sibling fetches, and with a bare shield
a sibling's ``abort`` of its ingest could still be under way when the pull
had already raised. This waits for the step, then re-raises the cancellation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, TypeVar

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from types import TracebackType

T = TypeVar("T")


class AsyncClosing:
    """Mixin: an async context manager whose exit awaits :meth:`aclose`."""

    async def aclose(self) -> None:
        """Release what the object holds (a subclass's job)."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Closing:
    """Mixin: a context manager whose exit calls :meth:`close`."""

    def close(self) -> None:
        """Release what the object holds (a subclass's job)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def finish_shielded(step: Awaitable[T]) -> T:
    """Await ``step`` to its end even if the calling task is cancelled meanwhile.

    Returns:
        What ``step`` returned.

    Raises:
        asyncio.CancelledError: the caller was cancelled while ``step`` ran
            (raised once ``step`` has finished).
        Exception: whatever ``step`` raised, when the caller was not cancelled.
    """
    import asyncio  # here: the shim and ``ctr --help`` import this module, not asyncio

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
