"""h2hpack's decoder, differentially against the ``hpack`` package's, with hypothesis.

Header lists encoded by ``hpack.Encoder`` (Huffman or not, indexed, never
indexed, table size changes between blocks) must decode to the same fields
through both decoders, block after block on one connection's table; arbitrary
bytes must be refused by ours whenever ``hpack`` refuses them; and the
header list cap stops an HPACK bomb.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hpack import Decoder, Encoder, HeaderTuple, HPACKError, NeverIndexedHeaderTuple
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycontainerd.api.h2hpack import (
    HeaderListTooLargeError,
    HpackDecoder,
    HpackError,
    encode_int,
    literal,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

NAMES = st.sampled_from(
    [":path", ":method", "content-type", "te", "grpc-timeout", "containerd-namespace", "x-b-bin"]
) | st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=40)
VALUES = st.binary(max_size=300).map(lambda b: b.decode("latin-1")) | st.text(max_size=100)
FIELD = st.tuples(NAMES, VALUES, st.booleans())
BLOCKS = st.lists(
    st.tuples(
        st.lists(FIELD, max_size=12),
        st.booleans(),  # Huffman
        st.one_of(st.none(), st.integers(min_value=0, max_value=4096)),  # new table size
    ),
    min_size=1,
    max_size=8,
)


def theirs() -> Decoder:
    d = Decoder()
    d.max_header_list_size = 1 << 30
    return d


def as_text(fields: Iterable[HeaderTuple]) -> list[tuple[str, str]]:
    out = []
    for n, v in fields:
        assert isinstance(n, bytes)
        assert isinstance(v, bytes)
        out.append((n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BLOCKS)
def test_encoded_blocks_decode_as_hpack_does(
    blocks: list[tuple[list[tuple[str, str, bool]], bool, int | None]],
) -> None:
    encoder = Encoder()
    ours = HpackDecoder()
    ref = theirs()
    for fields, huffman, table_size in blocks:
        if table_size is not None:
            encoder.header_table_size = table_size
        headers = [
            NeverIndexedHeaderTuple(n.encode(), v.encode()) if sensitive else (n, v)
            for n, v, sensitive in fields
        ]
        # The same list three times: literals first, then (mostly) indexes,
        # then the same index block again (the decoder's cached answer).
        for _ in range(3):
            block = encoder.encode(headers, huffman=huffman)
            want = as_text(ref.decode(block, raw=True))
            assert ours.decode(block) == want


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
def test_arbitrary_bytes_refused_as_hpack_refuses_them(blocks: list[bytes]) -> None:
    ours = HpackDecoder()
    ref = theirs()
    for block in blocks:
        try:
            want = as_text(ref.decode(block, raw=True))
        except (HPACKError, IndexError, ValueError):  # hpack's own error or a bug-shaped one
            with pytest.raises(HpackError):
                ours.decode(block)
            return
        assert ours.decode(block) == want


def test_bomb_of_references_is_refused_by_the_list_cap() -> None:
    ours = HpackDecoder(max_list=1 << 20)
    value = b"v" * 4000
    # One literal into the dynamic table, then one-byte references to it (index 62).
    block = b"\x40" + encode_int(1, 7, 0) + b"x" + encode_int(len(value), 7, 0) + value
    with pytest.raises(HeaderListTooLargeError, match="larger than the advertised 1048576"):
        ours.decode(block + b"\xbe" * 300)
    fresh = HpackDecoder(max_list=1 << 20)
    assert len(fresh.decode(block + b"\xbe" * 200)) == 201  # 201 x 4033 bytes fits


def test_table_size_update_above_the_setting_is_refused() -> None:
    with pytest.raises(HpackError, match="above the advertised 4096"):
        HpackDecoder().decode(b"\x3f\xe2\x1f")  # size update to 4097


@given(st.text(min_size=1, max_size=50), st.binary(max_size=300))
def test_literal_round_trips_through_hpack(name: str, value: bytes) -> None:
    raw = name.encode()
    assert theirs().decode(literal(raw, value), raw=True) == [(raw, value)]
