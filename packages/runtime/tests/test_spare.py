"""The spare shim: handed a new shim's work, replaced when it dies, stopped with the daemon.

These drive :mod:`pycontainerd.runtime.shim.spare` and ``bootstrap.start_here``
directly (a fake daemon layout, as test_bootstrap), and run
:class:`pycontainerd.runtime.spares.Spares` on an event loop; the daemon's use
of its spare across a restart is in test_e2e_tasks.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.api.runtime.task.v2 import shim_pb2
from pycontainerd.api.ttrpc import Client, ServiceClient
from pycontainerd.runtime.shim import bootstrap, spare
from pycontainerd.runtime.shim.service import TASK_SPEC
from pycontainerd.runtime.spares import Spares
from pycontainerd.runtime.testing import is_our_shim, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CTR = "/usr/bin/ctr"


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


class Layout:
    """A fake daemon layout: state dir, bundles, an address nobody listens on."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.state = os.path.join(root, "state")
        self.address = os.path.join(root, "c.sock")
        self.pids: set[int] = set()

    def bundle(self, task_id: str, ns: str = "ns") -> str:
        path = os.path.join(self.state, "io.containerd.runtime.v2.task", ns, task_id)
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump({"annotations": {}}, f)
        return path

    def spare(self) -> spare.Spare:
        s = spare.start(self.address, dict(os.environ))
        self.pids.add(s.pid)
        return s

    def shim_pid(self, bundle: str) -> int:
        with open(os.path.join(bundle, "shim.pid")) as f:
            pid = int(f.read())
        self.pids.add(pid)
        return pid


@pytest.fixture
def layout() -> Iterator[Layout]:
    d = Layout(tempfile.mkdtemp(prefix="rsp", dir="/tmp"))
    try:
        yield d
    finally:
        for pid in d.pids:
            if is_our_shim(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(d.root, ignore_errors=True)


async def _connect_pid(address: str) -> int:
    async with await Client.connect(address, timeout=10) as client:
        task = ServiceClient(client, TASK_SPEC, namespace="ns")
        resp = await task.call("Connect", shim_pb2.ConnectRequest(id="a"), timeout=10)
        return int(resp.shim_pid)


def test_start_here_hands_the_new_shim_to_the_spare(layout: Layout) -> None:
    s = layout.spare()
    assert is_our_shim(s.pid)
    assert _ppid(s.pid) != os.getpid()  # started through /bin/sh, as any shim
    assert s.alive()
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    if os.geteuid() == 0 and ours < spare.SPARE_NICE:
        # It imports in the background, at a lower priority than the daemon's work.
        wait_for(
            lambda: os.getpriority(os.PRIO_PROCESS, s.pid) == spare.SPARE_NICE,
            what="the spare's lower priority",
        )
    b1, b2 = layout.bundle("a"), layout.bundle("b")
    env = {**os.environ, bootstrap.GROUPING_ENV: "namespace"}
    address = bootstrap.start_here(b1, "ns", "a", layout.address, env, spare=s.take_over)
    assert s.used
    assert layout.shim_pid(b1) == s.pid
    assert os.getpriority(os.PRIO_PROCESS, s.pid) == ours  # a shim runs at the daemon's
    # It serves the task API on the group's socket, as the pid it was before.
    assert asyncio.run(_connect_pid(address)) == s.pid
    # Its output now goes to the shim's log next to the socket.
    assert os.path.exists(address.removeprefix("unix://") + ".log")
    # The next task of the group is reserved in it; no spare is asked for then.
    asked: list[str] = []

    def offer(argv: list[str], env: dict[str, str], listener: int, log: str) -> int | None:
        asked.append("b")
        return None

    again = bootstrap.start_here(b2, "ns", "b", layout.address, env, spare=offer)
    assert again == address
    assert asked == []
    assert layout.shim_pid(b2) == s.pid


def test_a_dead_spare_gives_way_to_a_new_shim(layout: Layout) -> None:
    s = layout.spare()
    os.kill(s.pid, signal.SIGKILL)
    wait_for(lambda: not s.alive(), what="the spare's end of the socketpair to close")
    b1 = layout.bundle("a")
    address = bootstrap.start_here(
        b1, "ns", "a", layout.address, dict(os.environ), spare=s.take_over
    )
    pid = layout.shim_pid(b1)
    assert pid != s.pid
    assert s.used
    assert is_our_shim(pid)
    assert asyncio.run(_connect_pid(address)) == pid


def test_a_spare_whose_daemon_goes_away_exits(layout: Layout) -> None:
    s = layout.spare()
    s.close()  # what a daemon that dies leaves: the socketpair closed
    wait_for(lambda: not is_our_shim(s.pid), what="the orphaned spare to exit")


def test_stop_kills_a_waiting_spare(layout: Layout) -> None:
    s = layout.spare()
    s.stop()
    wait_for(lambda: not is_our_shim(s.pid), what="the stopped spare to go")
    with pytest.raises(OSError, match="already used"):
        s.hand([], {}, 0, 0)


async def test_pool_keeps_a_spare_only_once_one_is_wanted_and_replaces_a_dead_one(
    layout: Layout,
) -> None:
    pool = Spares(layout.address, lambda: dict(os.environ))
    pool.give_back(None, wanted=False)  # a group's running shim was reserved
    pool.refill()  # (the task manager's, once the task is created)
    await asyncio.sleep(0)
    assert (pool.waiting, pool._starting) == (None, None)
    pool.give_back(None, wanted=True)  # a new shim was needed
    assert pool._starting is None  # not while the new shim creates its task
    pool.refill()
    await _wait_async(lambda: pool.waiting is not None, "a spare")
    first = pool.waiting
    assert first is not None
    layout.pids.add(first.pid)
    os.kill(first.pid, signal.SIGKILL)
    await _wait_async(
        lambda: pool.waiting is not None and pool.waiting is not first, "a replacement spare"
    )
    second = pool.waiting
    assert second is not None
    layout.pids.add(second.pid)
    assert second.pid != first.pid
    # Taken and not used (the group's shim answered): back in the pool, same process.
    taken = pool.take()
    assert (taken, pool.waiting) == (second, None)
    pool.give_back(taken, wanted=False)
    assert pool.waiting is second
    await pool.aclose()
    assert _waiting(pool) is None
    await _wait_async(lambda: not is_our_shim(second.pid), "the pool's spare to be killed")
    pool.give_back(None, wanted=True)
    pool.refill()
    assert pool._starting is None  # closed: no new spare


def _waiting(pool: Spares) -> spare.Spare | None:
    return pool.waiting


async def _wait_async(cond: Callable[[], bool], what: str) -> None:
    """``wait_for`` in a thread: the pool's loop runs meanwhile."""
    await asyncio.to_thread(wait_for, cond, 30, what)
