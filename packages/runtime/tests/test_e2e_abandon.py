"""A ``ctr run --rm`` killed while its task is being created leaves nothing behind.

Our daemon with our shim and the Go ``ctr``. ``runc create`` is held back by a
wrapper (``ctr run --runc-binary``) until the test opens a gate; the ``ctr``
is killed while it waits. The daemon gives the Create up and deletes the task;
the shim finishes the Create and then undoes it. Or the daemon itself is
killed then: the shim's Create loses its caller and must undo itself.
Afterwards: no task, no runc container, and the shim has exited (before, with
the daemon gone, the shim exited and left the container runc created after).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.runtime.testing import (
    CTR,
    delete_runc_containers,
    is_our_shim,
    kill_with_shims,
    our_daemon,
    runc_containers,
    wait_for,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycontainerd.daemon.testing import Daemon


pytestmark = [pytest.mark.system]


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    with our_daemon("ab-", env={"PYCONTAINERD_SHIM_LINGER": "0.2"}) as (d, _):
        try:
            d.start()
            yield d
        finally:
            kill_with_shims(d)
            delete_runc_containers(d.state / "runc" / "default")


@pytest.mark.parametrize("killed", ["ctr", "daemon"])
def test_run_rm_killed_during_create_leaves_no_container_and_no_shim(
    daemon: Daemon, killed: str
) -> None:
    base = daemon.base
    rootfs = base / "rootfs"  # the fixture's busybox
    at_gate, gate = base / "at-gate", base / "gate"
    wrapper = base / "gated-runc"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do\n'
        '  if [ "$a" = create ]; then\n'
        f"    touch {at_gate}\n"
        f"    while [ ! -e {gate} ]; do [ -d {base} ] || exit 1; sleep 0.02; done\n"
        "  fi\n"
        "done\n"
        'exec runc "$@"\n'
    )
    wrapper.chmod(0o755)
    cid = f"ab-{os.getpid()}"
    ctr = subprocess.Popen(
        [
            *(CTR, "-a", daemon.address, "run", "--rm", "--runc-binary", str(wrapper)),
            *("--rootfs", str(rootfs), cid, "/bin/echo", "hi"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: at_gate.exists() or ctr.poll() is not None, 60, "runc create")
        assert ctr.poll() is None, "ctr ended before runc create"
        bundle = daemon.state / "io.containerd.runtime.v2.task" / "default" / cid
        shim_pid = int((bundle / "shim.pid").read_text())
        assert is_our_shim(shim_pid)
        shim_log = Path((bundle / "address").read_text().removeprefix("unix://") + ".log")
    finally:
        ctr.kill()
        ctr.wait()
    runc_root = daemon.state / "runc" / "default"
    if killed == "daemon":
        # The daemon dies with the Create in flight: the shim's Create loses its
        # caller (the connection closes) and must undo itself.
        daemon.kill()
        gate.touch()
        seen = [""]

        def shim_gone() -> bool:
            with contextlib.suppress(OSError):
                seen[0] = shim_log.read_text()
            return not is_our_shim(shim_pid)

        wait_for(shim_gone, 60, "the shim to exit")
        wait_for(lambda: not _runc_running(runc_root), 30, "runc calls to end")
        assert runc_containers(runc_root) == [], seen[0]
        return

    # The daemon notices the client is gone and deletes the task it gave up
    # on; the shim's Delete waits for the Create, still held at the gate.
    # (A shim that does not wait, as before, exits instead.)
    def abandoned() -> bool:
        with contextlib.suppress(OSError):
            if f"delete of {cid} waits for its create" in shim_log.read_text():
                return True
        return not is_our_shim(shim_pid)

    wait_for(abandoned, 60, "the daemon to abandon the create")
    gate.touch()
    wait_for(lambda: not is_our_shim(shim_pid), 60, "the shim to exit")
    assert runc_containers(runc_root) == []
    tasks = subprocess.run(
        [CTR, "-a", daemon.address, "tasks", "ls", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cid not in tasks.stdout.split()
    wait_for(lambda: not bundle.exists(), 60, "the daemon to remove the bundle")


def _runc_running(root: Path) -> bool:
    """Whether a runc call on ``root`` (or our gated wrapper) still runs."""
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes()
            if str(root).encode() in cmdline and b"create" in cmdline:
                return True
    return False
