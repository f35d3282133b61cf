"""The reaper: every child exit is collected once and reaches its watcher."""

from __future__ import annotations

import asyncio
import os
import signal

from pycontainerd.runtime.shim.reaper import Reaper, exit_status, spawn


async def test_concurrent_children_lose_no_exit(reaper: Reaper) -> None:
    futures = {}
    for code in range(60):
        pid, fut = spawn(reaper, ["/bin/sh", "-c", f"exit {code}"])
        futures[pid] = (code, fut)
    results = await asyncio.wait_for(asyncio.gather(*(f for _, f in futures.values())), 20)
    assert sorted(r.status for r in results) == list(range(60))
    for ex in results:
        assert futures[ex.pid][0] == ex.status


async def test_exit_before_watch_is_kept(reaper: Reaper) -> None:
    # Not registered: like a container init that exits before its pid file is read.
    pid = os.posix_spawnp("/bin/sh", ["/bin/sh", "-c", "exit 7"], os.environ)  # noqa: ASYNC221
    seen: list[int] = []
    reaper.subscribe(lambda ex: seen.append(ex.pid))
    deadline = asyncio.get_running_loop().time() + 10
    while pid not in seen:
        assert asyncio.get_running_loop().time() < deadline, "exit never collected"
        await asyncio.sleep(0.01)
    fut = reaper.watch(pid)
    assert fut.done()
    assert fut.result().status == 7
    assert reaper.take(pid) is None  # handed out once


async def test_signalled_child_is_128_plus_signal(reaper: Reaper) -> None:
    pid, fut = spawn(reaper, ["/bin/sleep", "30"])
    os.kill(pid, signal.SIGKILL)
    assert (await asyncio.wait_for(fut, 10)).status == 137


async def test_orphans_of_a_concurrent_spawner_are_collected(reaper: Reaper) -> None:
    """Exits of watched and unwatched children interleave without stealing each other."""
    watched = [spawn(reaper, ["/bin/sh", "-c", "sleep 0.05; exit 3"]) for _ in range(10)]
    unwatched = [
        os.posix_spawnp("/bin/sh", ["/bin/sh", "-c", "exit 4"], os.environ)  # noqa: ASYNC221
        for _ in range(10)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(f for _, f in watched)), 20)
    assert all(r.status == 3 for r in results)
    late = [reaper.watch(pid) for pid in unwatched]
    assert all(r.status == 4 for r in await asyncio.wait_for(asyncio.gather(*late), 10))


def test_exit_status_of_raw_wait_status() -> None:
    assert exit_status(3 << 8) == 3
    assert exit_status(signal.SIGTERM) == 128 + signal.SIGTERM
