"""stdio through client FIFOs: output copies, stdin with EOF, and closing."""

from __future__ import annotations

import asyncio
import os
import threading
from typing import TYPE_CHECKING

import pytest

from pycontainerd.runtime.shim.reaper import Reaper, spawn
from pycontainerd.runtime.shim.stdio import ProcessIO

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


async def _read(fd: int, done: Callable[[bytearray], bool], limit: float) -> bytes:
    """Read the non-blocking ``fd`` until ``done(what was read)``, for ``limit`` seconds."""
    data = bytearray()
    deadline = asyncio.get_running_loop().time() + limit
    while not done(data):
        assert asyncio.get_running_loop().time() < deadline, f"got {len(data)} bytes: {data!r}"
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            chunk = b""
        if not chunk:
            await asyncio.sleep(0.005)
        data += chunk
    return bytes(data)


async def _read_until(fd: int, want: bytes, limit: float = 10) -> bytes:
    return await _read(fd, lambda data: want in data, limit)


async def test_output_reaches_the_fifo(tmp_path: Path, reaper: Reaper) -> None:
    out = tmp_path / "out"
    os.mkfifo(out)
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    try:
        io = ProcessIO("", str(out), "", terminal=False)
        fds = io.child_fds()
        _, fut = spawn(
            reaper,
            ["/bin/sh", "-c", "echo hello; echo err >&2"],
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
        )
        io.started()
        assert (await fut).status == 0
        assert await _read_until(reader, b"hello\n") == b"hello\n"
        await io.wait_output()
        io.close()
    finally:
        os.close(reader)


async def test_stdin_is_copied_and_client_close_is_eof(tmp_path: Path, reaper: Reaper) -> None:
    stdin, out = tmp_path / "in", tmp_path / "out"
    os.mkfifo(stdin)
    os.mkfifo(out)
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    try:
        io = ProcessIO(str(stdin), str(out), "", terminal=False)
        fds = io.child_fds()
        _, fut = spawn(reaper, ["/bin/cat"], stdin=fds[0], stdout=fds[1], stderr=fds[2])
        io.started()
        # The client opens its writer after the shim started waiting for it.
        writer = await asyncio.to_thread(os.open, stdin, os.O_WRONLY)
        os.write(writer, b"abc\n")
        assert await _read_until(reader, b"abc\n") == b"abc\n"
        os.close(writer)  # EOF reaches cat, which exits
        assert (await asyncio.wait_for(fut, 10)).status == 0
        io.close()
    finally:
        os.close(reader)


async def test_a_stdin_fifo_nobody_opens_blocks_nothing(tmp_path: Path, reaper: Reaper) -> None:
    """The client never opens its end (gone, or never got that far): no thread
    waits for it, and CloseIO still ends the process's input."""
    stdin = tmp_path / "in"
    os.mkfifo(stdin)
    before = threading.active_count()
    io = ProcessIO(str(stdin), "", "", terminal=False)
    fds = io.child_fds()
    _, fut = spawn(reaper, ["/bin/cat"], stdin=fds[0], stdout=fds[1], stderr=fds[2])
    io.started()
    assert threading.active_count() == before
    os.unlink(stdin)  # ctr removes its FIFOs before the task is deleted
    io.close_stdin()
    assert (await asyncio.wait_for(fut, 10)).status == 0  # cat saw EOF
    io.close()


async def test_a_client_that_opens_and_closes_without_writing_is_eof(
    tmp_path: Path, reaper: Reaper
) -> None:
    stdin = tmp_path / "in"
    os.mkfifo(stdin)
    io = ProcessIO(str(stdin), "", "", terminal=False)
    fds = io.child_fds()
    _, fut = spawn(reaper, ["/bin/cat"], stdin=fds[0], stdout=fds[1], stderr=fds[2])
    io.started()
    os.close(os.open(stdin, os.O_WRONLY | os.O_NONBLOCK))  # the shim's reader is there
    assert (await asyncio.wait_for(fut, 10)).status == 0
    io.close()


async def _read_exactly(fd: int, size: int, limit: float = 20) -> bytes:
    return await _read(fd, lambda data: len(data) >= size, limit)


@pytest.mark.parametrize("pump_running", [True, False], ids=["copying", "open-pending"])
async def test_close_io_ends_stdin_only_after_buffered_input(
    tmp_path: Path, reaper: Reaper, pump_running: bool
) -> None:
    """CloseIO right after a write: everything written still reaches the process, then EOF."""
    stdin, out = tmp_path / "in", tmp_path / "out"
    os.mkfifo(stdin)
    os.mkfifo(out)
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    # More than a pipe holds when the copy is running; within one pipe otherwise
    # (nothing reads the FIFO before the shim's open is delivered).
    payload = os.urandom(300_000 if pump_running else 60_000)
    writer = -1
    try:
        io = ProcessIO(str(stdin), str(out), "", terminal=False)
        fds = io.child_fds()
        _, fut = spawn(reaper, ["/bin/cat"], stdin=fds[0], stdout=fds[1], stderr=fds[2])
        io.started()
        if pump_running:
            writer = await asyncio.to_thread(os.open, stdin, os.O_WRONLY)
            received = asyncio.ensure_future(_read_exactly(reader, len(payload)))
            await asyncio.to_thread(os.write, writer, payload)
        else:
            # Open and write without yielding to the loop: the shim has not
            # seen its end of the FIFO open yet when CloseIO arrives.
            writer = os.open(stdin, os.O_WRONLY)
            assert os.write(writer, payload) == len(payload)
            received = None
        io.close_stdin()  # the client keeps its writer open: EOF must come from CloseIO
        if received is None:
            received = asyncio.ensure_future(_read_exactly(reader, len(payload)))
        assert await received == payload
        assert (await asyncio.wait_for(fut, 10)).status == 0  # cat saw EOF
        io.close()
    finally:
        if writer >= 0:
            os.close(writer)
        os.close(reader)


async def test_close_copies_output_the_loop_has_not_copied_yet(tmp_path: Path) -> None:
    """A process deleted before the loop ran its output copy still gets its output out
    (ctr exec on a loaded machine: the exit, then Delete, came before the copy)."""
    out = tmp_path / "out"
    os.mkfifo(out)
    reader = os.open(out, os.O_RDONLY | os.O_NONBLOCK)
    try:
        io = ProcessIO("", str(out), "", terminal=False)
        _, stdout, _ = io.child_fds()
        assert stdout is not None
        process_end = os.dup(stdout)  # the process's copy (started() closes ours)
        io.started()  # the copy now waits for the loop
        os.write(process_end, b"hi\n")  # the process writes, then exits
        os.close(process_end)
        io.close()  # no loop turn in between: the copy never ran
        assert os.read(reader, 4096) == b"hi\n"
        assert os.read(reader, 4096) == b""  # and the FIFO's writer is closed
    finally:
        os.close(reader)
