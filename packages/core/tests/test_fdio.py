"""fdio: write_all fills and drains a non-blocking pipe; a FIFO's writer opens without waiting."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core import fdio
from pycontainerd.core.fdio import write_all

if TYPE_CHECKING:
    from pathlib import Path


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


def test_a_fifo_without_reader_gives_no_writer_and_one_with_a_reader_does(tmp_path: Path) -> None:
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    assert fdio.open_fifo_writer(path) is None
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        writer = fdio.open_fifo_writer(path)
        assert writer is not None
        try:
            assert not os.get_blocking(writer)
            os.write(writer, b"x")
            assert os.read(reader, 1) == b"x"
        finally:
            os.close(writer)
    finally:
        os.close(reader)


def test_opening_a_missing_fifo_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fdio.open_fifo_writer(str(tmp_path / "missing"))


def test_retry_delays_double_from_a_millisecond_up_to_the_longest() -> None:
    delays = fdio.retry_delays(0.005)
    assert [next(delays) for _ in range(5)] == [0.001, 0.002, 0.004, 0.005, 0.005]
