"""write_all: a non-blocking pipe fills and drains on the event loop."""

from __future__ import annotations

import asyncio
import os

import pytest

from pycontainerd.core.fdio import write_all


async def test_writes_more_than_the_pipe_holds() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    data = os.urandom(1 << 20)  # well past a pipe's 64 KiB
    got = bytearray()

    def drain() -> None:
        while chunk := os.read(r, 1 << 16):
            got.extend(chunk)

    reader = asyncio.get_running_loop().run_in_executor(None, drain)
    try:
        await write_all(w, data)
    finally:
        os.close(w)
    await reader
    os.close(r)
    assert bytes(got) == data


async def test_a_closed_reader_is_a_broken_pipe() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    os.close(r)
    try:
        with pytest.raises(BrokenPipeError):
            await write_all(w, b"x")
    finally:
        os.close(w)
