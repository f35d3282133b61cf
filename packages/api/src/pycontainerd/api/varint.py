"""The protobuf base-128 varint, for the few places that frame bytes without protobuf.

The shim's start path and the ttrpc framing write a length or a field key
before loading (or instead of) protobuf's runtime; this module imports nothing,
so both can share it.
"""

from __future__ import annotations

__all__ = ["uvarint"]


def uvarint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf base-128 varint."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
