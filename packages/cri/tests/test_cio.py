"""CRI log formatting and FIFO copying (no daemon)."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pycontainerd.cri import cio

if TYPE_CHECKING:
    from pathlib import Path


def _shim_end(fifo: cio.OutputFifo) -> int:
    """Open the FIFO's write end as the shim does (read-write), then drop our hold."""
    fd = os.open(fifo.path, os.O_RDWR)
    fifo.release()
    return fd


def test_timestamp_is_gos_rfc3339nano() -> None:
    assert cio.timestamp(datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)) == (
        "2026-01-02T03:04:05.12Z"
    )
    assert cio.timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"


def test_long_lines_are_split_into_partial_pieces() -> None:
    lines = cio.cri_lines("stdout", b"abcdefgh", 3)
    assert [line.split(b" ", 1)[1] for line in lines] == [
        b"stdout P abc\n",
        b"stdout P def\n",
        b"stdout F gh\n",
    ]
    assert [ln.split(b" ", 1)[1] for ln in cio.cri_lines("stderr", b"", 3)] == [b"stderr F \n"]


def test_copy_to_log_keeps_every_line_and_splits_partials(tmp_path: Path) -> None:
    fifo = cio.OutputFifo(cio.make_fifo(tmp_path / "out"))
    log = tmp_path / "c.log"
    payload = b"".join(f"line {i}\n".encode() for i in range(5000)) + b"x" * 25 + b"\n" + b"end"
    fd = _shim_end(fifo)

    def writer() -> None:
        for i in range(0, len(payload), 4093):  # chunks that cut lines anywhere
            os.write(fd, payload[i : i + 4093])
        os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    out = cio.LogFile(str(log))
    asyncio.run(cio.copy_to_log(fifo, "stdout", out, 10))
    out.close()
    thread.join()
    lines = log.read_text().splitlines()
    assert all(re.match(r"\S+Z stdout [FP] ", line) for line in lines)
    texts = [line.split(" ", 3)[3] if line.count(" ") >= 3 else "" for line in lines]
    tags = [line.split(" ", 3)[2] for line in lines]
    assert texts[:5000] == [f"line {i}" for i in range(5000)]
    assert tags[:5000] == ["F"] * 5000
    assert list(zip(tags[5000:], texts[5000:], strict=True)) == [
        ("P", "x" * 10),
        ("P", "x" * 10),
        ("F", "x" * 5),
        ("F", "end"),
    ]


def test_a_missing_log_directory_drops_output_until_a_reopen_works(tmp_path: Path) -> None:
    log = tmp_path / "gone" / "c.log"
    out = cio.open_log(str(log))
    assert out.fd == -1
    fifo = cio.OutputFifo(cio.make_fifo(tmp_path / "out"))
    fd = _shim_end(fifo)

    def writer() -> None:
        os.write(fd, b"lost\n" * 1000)
        os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    asyncio.run(cio.copy_to_log(fifo, "stdout", out, 0))  # returns: the output was drained
    thread.join()
    assert out.dropped > 5000
    log.parent.mkdir()
    out.reopen()
    out.write(b"kept\n")
    out.close()
    assert log.read_text() == "kept\n"


def test_output_of_a_process_gone_before_reading_is_kept_without_worker_threads(
    tmp_path: Path,
) -> None:
    # A shim whose process exited at once opens, writes and closes its end
    # before the daemon's copier ever runs, while every worker thread is busy.
    # The read end opened up front keeps the output and sees end of file; an
    # open queued on the busy pool would run after the writer was gone and
    # wait for ever.
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(1))
        gate = threading.Event()
        busy = loop.run_in_executor(None, gate.wait)
        try:
            fifo = cio.OutputFifo(cio.make_fifo(tmp_path / "out"))
            shim = os.open(fifo.path, os.O_RDWR | os.O_NONBLOCK)
            os.write(shim, b"hi\n")
            os.close(shim)
            fifo.release()
            return await asyncio.wait_for(cio.collect(fifo, 1 << 20), 10)
        finally:
            gate.set()
            await busy

    assert asyncio.run(main()) == b"hi\n"


def test_a_released_fifo_the_shim_never_opened_ends_at_once(tmp_path: Path) -> None:
    async def main() -> bytes:
        fifo = cio.OutputFifo(cio.make_fifo(tmp_path / "out"))
        reading = asyncio.ensure_future(cio.collect(fifo, 10))
        await asyncio.sleep(0)
        assert not reading.done()  # held open: no early end of file
        fifo.release()  # the shim's Create failed
        return await asyncio.wait_for(reading, 10)

    assert asyncio.run(main()) == b""
