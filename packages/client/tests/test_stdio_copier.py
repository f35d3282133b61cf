"""The client's side of a process's FIFOs (``StdioCopier``), without a daemon."""

from __future__ import annotations

import asyncio
import os
import threading
import types
from typing import TYPE_CHECKING

from pycontainerd.client import tasks
from pycontainerd.client.stdio import ProcessIO, Stdio
from pycontainerd.client.tasks import FifoSet, StdioCopier

if TYPE_CHECKING:
    from pathlib import Path

    import pytest


class _LateThread(threading.Thread):
    """A thread the scheduler runs late (a loaded machine): it starts when released."""

    held: list[threading.Thread] = []  # noqa: RUF012 - one test's list, reset by it

    def start(self) -> None:
        _LateThread.held.append(self)

    @classmethod
    def release(cls) -> None:
        for t in cls.held:
            threading.Thread.start(t)
        cls.held.clear()


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk


def test_output_fifos_are_open_when_start_output_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The readers exist before the task is created, as containerd's cio has them.

    A shim that writes and closes at once (a fast process deleted on a loaded
    machine) must not find the FIFO without a reader: the output would be lost
    and a reader opening later would wait for a writer that never comes.
    """
    monkeypatch.setattr(tasks, "threading", types.SimpleNamespace(Thread=_LateThread))
    fifos = FifoSet.create("p", root=str(tmp_path))
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    copier = StdioCopier(fifos, stdout=out_w, stderr=err_w)
    try:
        copier.start_output()  # its threads do not run yet
        # The shim's end, right away and without waiting: ENXIO if no reader is there.
        for path, data in ((fifos.stdout, b"out\n"), (fifos.stderr, b"err\n")):
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, data)
            os.close(fd)
        fifos.remove()
        _LateThread.release()
        assert copier.wait_output(10.0)
        assert _read_all(out_r) == b"out\n"
        assert _read_all(err_r) == b"err\n"
    finally:
        _LateThread.release()
        copier.unblock()
        fifos.remove()
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)


def test_a_missing_output_fifo_starts_no_reader(tmp_path: Path) -> None:
    fifos = FifoSet(stdout=str(tmp_path / "gone"))
    out_r, out_w = os.pipe()
    copier = StdioCopier(fifos, stdout=out_w, stderr=None)
    try:
        copier.start_output()
        assert copier.wait_output(1.0)
    finally:
        for fd in (out_r, out_w):
            os.close(fd)


def test_stdin_bytes_for_a_process_that_never_opens_stdin_leave_nothing_waiting(
    tmp_path: Path,
) -> None:
    """A process that never started (or whose shim already closed its stdin) never
    opens the read end: feeding stops when the process's io is closed, and no
    thread is left waiting for ever in ``open``."""

    async def main() -> str:
        before = set(threading.enumerate())
        io = ProcessIO("p", Stdio(stdin=b"never read\n", fifo_dir=str(tmp_path)))
        io.start_output()
        io.start_input()
        # Time for a feeder to reach its open (a thread that comes after the
        # FIFO's removal fails to open it; the hazard is one already inside).
        await asyncio.sleep(0.2)
        await asyncio.wait_for(io.close(grace=0), 10)
        left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
        assert left == []
        return io.fifos.stdin

    assert not os.path.exists(asyncio.run(main()))


def test_stdin_bytes_reach_a_reader_that_opens_late(tmp_path: Path) -> None:
    async def main() -> bytes:
        io = ProcessIO("p", Stdio(stdin=b"x" * 200_000, fifo_dir=str(tmp_path)))
        io.start_output()
        io.start_input()
        await asyncio.sleep(0.05)  # the shim's open comes later than the feeder's first try
        fd = os.open(io.fifos.stdin, os.O_RDONLY | os.O_NONBLOCK)
        got = bytearray()
        try:
            async with asyncio.timeout(10):
                while True:  # more than a pipe holds: the feeder waits for room
                    try:
                        chunk = os.read(fd, 65536)
                    except BlockingIOError:
                        await asyncio.sleep(0.001)
                        continue
                    if not chunk and not got:
                        await asyncio.sleep(0.001)  # no writer yet: not an end of file
                        continue
                    if not chunk:
                        break  # the feeder closed its end
                    got += chunk
        finally:
            os.close(fd)
            await io.close(grace=0)
        return bytes(got)

    assert asyncio.run(main()) == b"x" * 200_000


def test_a_stdin_copy_whose_reader_never_comes_stops_when_told(tmp_path: Path) -> None:
    """The copier's stdin thread never sits in a blocking open: ``stop_stdin``
    (the process's stdio closed) ends it although no reader ever opened the FIFO."""
    fifos = FifoSet.create("p", root=str(tmp_path), stdin=True)
    local_r, local_w = os.pipe()
    before = set(threading.enumerate())
    copier = StdioCopier(fifos, stdin=local_r, stdout=None, stderr=None)
    try:
        copier.start_stdin()
        (feeder,) = set(threading.enumerate()) - before
        feeder.join(0.2)  # it keeps trying while there is no reader
        assert feeder.is_alive()
        copier.stop_stdin()
        feeder.join(10)
        assert not feeder.is_alive()
    finally:
        copier.unblock()
        fifos.remove()
        os.close(local_r)
        os.close(local_w)
