"""The client's side of a process's FIFOs (``StdioCopier``), without a daemon."""

from __future__ import annotations

import os
import threading
import types
from typing import TYPE_CHECKING

from pycontainerd.client import tasks
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
