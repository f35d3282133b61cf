"""``AsyncClosing``: ``async with obj:`` ends with ``await obj.aclose()``; ``Closing``: ``with``.

The one ``__aenter__``/``__aexit__`` pair of the objects that own a
connection, a server or a stream and close it on leaving the block (the ttrpc
client and server, the registry resolver, event subscriptions, the client),
and the one ``__exit__`` of their blocking twins (the sync client). A class
whose entry does more (connects, starts a stream) overrides the entry only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from types import TracebackType


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
