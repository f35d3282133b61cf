"""One-time tokens for streaming URLs, as the kubelet's streaming request cache.

Every Exec/Attach/PortForward call stores its request under a fresh random
token; the URL carries the token; the first request with it consumes it. An
unknown, expired or already used token is the same: not found (404).
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_TTL = 60.0  # upstream's streaming request cache keeps a request one minute
MAX_PENDING = 1000  # upstream bounds its cache too; the oldest entry goes first

T = TypeVar("T")


class TokenStoreFullError(Exception):
    """Too many unconsumed, unexpired tokens."""


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    expires: float


class TokenStore(Generic[T]):
    """Single-use tokens with expiry. Not thread-safe: use from one event loop."""

    def __init__(
        self,
        ttl: float = DEFAULT_TTL,
        max_pending: int = MAX_PENDING,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_pending = max_pending
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()

    def __len__(self) -> int:
        self._evict()
        return len(self._entries)

    def insert(self, value: T) -> str:
        """Store ``value``, return its new URL-safe token."""
        self._evict()
        if len(self._entries) >= self.max_pending:
            msg = f"too many pending streaming requests ({self.max_pending})"
            raise TokenStoreFullError(msg)
        token = secrets.token_urlsafe(8)
        while token in self._entries:  # pragma: no cover - 64 random bits
            token = secrets.token_urlsafe(8)
        self._entries[token] = _Entry(value, self._clock() + self.ttl)
        return token

    def consume(self, token: str) -> T | None:
        """The value of a valid token, which is used up; None if unknown, used or expired."""
        entry = self._entries.pop(token, None)
        if entry is None or entry.expires <= self._clock():
            return None
        return entry.value

    def _evict(self) -> None:
        now = self._clock()
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[token]
