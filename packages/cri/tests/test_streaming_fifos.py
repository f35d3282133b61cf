"""FIFO bridging for exec/attach: a real process on the far side of real FIFOs."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import TYPE_CHECKING

import pytest

from pycontainerd.cri.streaming.fifos import ProcessFifos, copy_from_fifo, copy_to_fifo
from pycontainerd.cri.streaming.session import InputStream, OutputStream

if TYPE_CHECKING:
    from pathlib import Path


def collector() -> tuple[OutputStream, bytearray]:
    buf = bytearray()

    async def send(data: bytes) -> None:
        buf.extend(data)

    async def close() -> None:
        return

    return OutputStream(send, close), buf


async def test_process_stdio_through_fifos(tmp_path: Path) -> None:
    fifos = ProcessFifos.create(tmp_path, "exec1", stdin=True, stdout=True, stderr=True)
    try:
        out, out_buf = collector()
        err, err_buf = collector()
        stdin = InputStream()
        copies = [
            asyncio.create_task(copy_from_fifo(fifos.stdout, out)),
            asyncio.create_task(copy_from_fifo(fifos.stderr, err)),
            asyncio.create_task(copy_to_fifo(stdin, fifos.stdin)),
        ]
        # The process opens its sides late, as a shim does after the session is set up.
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            'exec >"$1" 2>"$2" <"$3"; echo out; echo err >&2; tr a-z A-Z; exit 7',
            "sh",
            fifos.stdout,
            fifos.stderr,
            fifos.stdin,
        )
        stdin.feed(b"hello " * 10000)
        stdin.feed_eof()
        async with asyncio.timeout(30):
            assert await proc.wait() == 7
            await asyncio.gather(*copies)
        assert bytes(out_buf) == b"out\n" + b"HELLO " * 10000
        assert bytes(err_buf) == b"err\n"
    finally:
        fifos.remove()
    assert not (tmp_path / fifos.dir).exists()


async def test_cancelling_a_copy_whose_process_never_came_leaves_no_thread(tmp_path: Path) -> None:
    fifos = ProcessFifos.create(tmp_path, "exec2", stdin=True, stdout=True, stderr=False)
    assert fifos.stderr == ""
    out, _ = collector()
    copies = [
        asyncio.create_task(copy_from_fifo(fifos.stdout, out)),
        asyncio.create_task(copy_to_fifo(InputStream(), fifos.stdin)),
    ]
    await asyncio.sleep(0)  # both tasks start their blocking opens
    for c in copies:
        c.cancel()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*copies, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    # No worker thread is left inside open(O_RDONLY) on stdout: it would count as
    # a reader and let this non-blocking writer in.
    with pytest.raises(OSError, match="No such device or address") as e:
        os.open(fifos.stdout, os.O_WRONLY | os.O_NONBLOCK)
    assert e.value.errno == errno.ENXIO
    fifos.remove()
