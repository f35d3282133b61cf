"""The hand-written varint encodes as protobuf's runtime does."""

from __future__ import annotations

import subprocess
import sys

import pytest
from google.protobuf.internal import decoder

from pycontainerd.api.types.cgroups.v1 import metrics_pb2
from pycontainerd.api.varint import uvarint


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16383, 16384, (1 << 32) - 1, (1 << 64) - 1])
def test_uvarint_round_trips(n: int) -> None:
    data = uvarint(n)
    value, end = decoder._DecodeVarint(data, 0)  # type: ignore[attr-defined]
    assert (value, end) == (n, len(data))


def test_uvarint_matches_a_generated_field() -> None:
    # PidsStat.limit (field 2): key 0x10, then the value's varint.
    msg = metrics_pb2.PidsStat(limit=300)
    assert msg.SerializeToString() == b"\x10" + uvarint(300)


def test_varint_module_imports_nothing() -> None:
    code = (
        "import sys; before = set(sys.modules); import pycontainerd.api.varint; "
        "extra = set(sys.modules) - before - {'pycontainerd', 'pycontainerd.api', "
        "'pycontainerd.api.varint', '__future__'}; print(sorted(extra))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
