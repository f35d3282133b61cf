"""Content digests: ``<algorithm>:<hex>`` strings, as in OCI and containerd.

A ``Digest`` is a ``str`` (it goes on the wire unchanged) that has passed
validation: a known algorithm (``sha256``, ``sha384`` or ``sha512``) and an
encoded part of exactly the right number of lowercase hex digits. The reason
texts are those of the go-digest library containerd uses, so a bad digest
reads the same as upstream: ``invalid digest "x": invalid checksum digest format``.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Final, Self

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.gostr import go_quote

if TYPE_CHECKING:
    from collections.abc import Iterable

SHA256: Final = "sha256"
SHA384: Final = "sha384"
SHA512: Final = "sha512"
CANONICAL: Final = SHA256

#: Known algorithms and the number of hex digits of their encoded part.
HEX_LENGTHS: Final = {SHA256: 64, SHA384: 96, SHA512: 128}

INVALID_FORMAT: Final = "invalid checksum digest format"
INVALID_LENGTH: Final = "invalid checksum digest length"
UNSUPPORTED: Final = "unsupported digest algorithm"

# The general OCI grammar; a digest matching it with an unknown algorithm is
# "unsupported" rather than "malformed".
_GRAMMAR: Final = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_LOWER_HEX: Final = re.compile(r"[a-f0-9]+")


def _reason(s: str) -> str | None:
    algorithm, sep, encoded = s.partition(":")
    if not sep or not algorithm or not encoded:
        return INVALID_FORMAT
    expected = HEX_LENGTHS.get(algorithm)
    if expected is None:
        return UNSUPPORTED if _GRAMMAR.fullmatch(s) else INVALID_FORMAT
    if len(encoded) != expected:
        return INVALID_LENGTH
    if _LOWER_HEX.fullmatch(encoded) is None:
        return INVALID_FORMAT
    return None


class Digest(str):
    """A validated ``algorithm:hex`` digest. Construct with ``Digest.parse``."""

    __slots__ = ()

    @classmethod
    def parse(cls, s: str) -> Self:
        """Validate ``s`` and return it as a ``Digest``.

        Raises:
            InvalidArgumentError: ``invalid digest "<s>": <reason>``, where the
                reason is ``invalid checksum digest format``,
                ``invalid checksum digest length`` or
                ``unsupported digest algorithm``.
        """
        if isinstance(s, cls):
            return s
        reason = _reason(s)
        if reason is not None:
            msg = f"invalid digest {go_quote(s)}: {reason}"
            raise InvalidArgumentError(msg)
        return cls(s)

    @classmethod
    def from_parts(cls, algorithm: str, encoded: str) -> Self:
        """Build and validate ``<algorithm>:<encoded>``.

        Raises:
            InvalidArgumentError: as ``parse``.
        """
        return cls.parse(f"{algorithm}:{encoded}")

    @property
    def algorithm(self) -> str:
        """The part before the colon (``sha256``)."""
        return self.partition(":")[0]

    @property
    def encoded(self) -> str:
        """The hex part after the colon."""
        return self.partition(":")[2]

    def short(self, length: int = 12) -> str:
        """The first ``length`` hex digits, as ``ctr`` shows digests in tables."""
        return self.encoded[:length]


def is_valid(s: str) -> bool:
    """Whether ``s`` is a valid digest of a known algorithm."""
    return _reason(s) is None


def parse(s: str) -> Digest:
    """Validate ``s`` and return it as a ``Digest`` (see ``Digest.parse``).

    Raises:
        InvalidArgumentError: ``s`` is not a valid digest.
    """
    return Digest.parse(s)


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in HEX_LENGTHS:
        msg = f"digest algorithm {go_quote(algorithm)}: {UNSUPPORTED}"
        raise InvalidArgumentError(msg)


class Hasher:
    """Computes a digest incrementally, for streamed content.

    ``update`` may be called any number of times; ``digest`` may be called at
    any point and does not end the stream.
    """

    __slots__ = ("_algorithm", "_hash", "_size")

    def __init__(self, algorithm: str = CANONICAL) -> None:
        _check_algorithm(algorithm)
        self._algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self._size = 0

    @property
    def algorithm(self) -> str:
        """The algorithm this hasher computes."""
        return self._algorithm

    @property
    def size(self) -> int:
        """Bytes fed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed ``data``."""
        self._hash.update(data)
        self._size += len(data)

    def digest(self) -> Digest:
        """The digest of everything fed so far."""
        return Digest(f"{self._algorithm}:{self._hash.hexdigest()}")

    def copy(self) -> Hasher:
        """An independent hasher with the same state (resumable ingests)."""
        other = Hasher.__new__(Hasher)
        other._algorithm = self._algorithm
        other._hash = self._hash.copy()
        other._size = self._size
        return other


def hasher(algorithm: str = CANONICAL) -> Hasher:
    """A new incremental hasher for ``algorithm``.

    Raises:
        InvalidArgumentError: the algorithm is not one of ``HEX_LENGTHS``.
    """
    return Hasher(algorithm)


def digest_of(data: bytes | bytearray | memoryview, algorithm: str = CANONICAL) -> Digest:
    """The digest of ``data``.

    Raises:
        InvalidArgumentError: the algorithm is not one of ``HEX_LENGTHS``.
    """
    h = Hasher(algorithm)
    h.update(data)
    return h.digest()


def digest_of_chunks(
    chunks: Iterable[bytes | bytearray | memoryview], algorithm: str = CANONICAL
) -> Digest:
    """The digest of the concatenation of ``chunks``.

    Raises:
        InvalidArgumentError: the algorithm is not one of ``HEX_LENGTHS``.
    """
    h = Hasher(algorithm)
    for chunk in chunks:
        h.update(chunk)
    return h.digest()
