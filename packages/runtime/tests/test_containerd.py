"""Our shim under a real containerd, driven by containerd's own ``ctr``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from pycontainerd.runtime.testing import (
    CTR,
    RUNTIME,
    Containerd,
    is_our_shim,
    on_a_terminal,
    wait_for,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.system


def unique(name: str) -> str:
    """``name`` with a random suffix, for a container id.

    Each test has a containerd of its own, but what runc makes for a container
    is machine-wide: its cgroup (``/<namespace>/<id>`` in the default spec) and,
    under the Go shim, runc's state root. Another test of the parallel suite
    (this package's or another's) running a container of the same id in the same
    namespace would share them.
    """
    return f"{name}-{uuid.uuid4().hex[:8]}"


def run(
    ctd: Containerd, *args: str, namespace: str = "default", timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``ctr run`` with our runtime; leading ``-`` args are flags, then ID and command."""
    n = 0
    while n < len(args) and args[n].startswith("-"):
        n += 1
    return ctd.ctr(
        "-n",
        namespace,
        "run",
        "--runtime",
        RUNTIME,
        "--rootfs",
        *args[:n],
        str(ctd.rootfs),
        *args[n:],
        timeout=timeout,
    )


class Events:
    """``ctr events`` running in the background."""

    def __init__(self, ctd: Containerd) -> None:
        self.out = ctd.dir / "events.txt"
        self._f = self.out.open("wb")
        self.proc = subprocess.Popen(
            [CTR, "-a", ctd.address, "events"], stdout=self._f, stderr=subprocess.STDOUT
        )

    def lines(self) -> list[str]:
        return self.out.read_text().splitlines()

    def topics(self, container: str) -> list[str]:
        return [
            line.split()[5]
            for line in self.lines()
            if len(line.split()) > 5
            and f'"{container}"' in line
            and line.split()[5].startswith("/tasks/")
        ]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)
        self._f.close()


def wait_subscribed(containerd: Containerd, ev: Events) -> None:
    """Return once ``ev`` receives events.

    The subscription is live once an event of our own shows up: probe with
    namespaces created and removed until one does (a single probe can come
    before ``ctr events`` has subscribed, on a loaded machine).
    """
    probes = 0

    def subscribed() -> bool:
        nonlocal probes
        if any("/namespaces/create" in line for line in ev.lines()):
            return True
        probes += 1
        containerd.ctr("namespaces", "create", f"probe-ns{probes}", check=True)
        containerd.ctr("namespaces", "rm", f"probe-ns{probes}", check=True)
        return False

    wait_for(subscribed, timeout=30, what="events subscription")


@pytest.fixture
def events(containerd: Containerd) -> Iterator[Events]:
    ev = Events(containerd)
    wait_subscribed(containerd, ev)
    try:
        yield ev
    finally:
        ev.close()


def test_run_prints_output_and_exit_status(containerd: Containerd) -> None:
    t1 = unique("t1")
    res = run(containerd, "--rm", t1, "/bin/sh", "-c", "echo hello; exit 3")
    assert res.stdout == "hello\n", res.stderr
    assert res.returncode == 3
    # --rm deleted the task and the bundle
    wait_for(lambda: not containerd.bundle(t1).exists(), what="bundle removal")


def test_detached_task_lifecycle(containerd: Containerd, events: Events) -> None:
    t2 = unique("t2")
    res = run(containerd, "-d", t2, "/bin/sleep", "300")
    assert res.returncode == 0, res.stderr
    bundle = containerd.bundle(t2)
    address = (bundle / "address").read_text()
    assert address.startswith(f"unix://{containerd.state}/s/")
    ls = containerd.ctr("tasks", "ls", check=True).stdout
    assert any(
        line.split()[:1] == [t2] and line.split()[2] == "RUNNING" for line in ls.splitlines()[1:]
    )
    pid = int(next(line.split()[1] for line in ls.splitlines()[1:] if line.split()[0] == t2))

    ps = containerd.ctr("tasks", "ps", t2, check=True).stdout
    assert str(pid) in ps

    ex = containerd.ctr("tasks", "exec", "--exec-id", "e1", t2, "/bin/echo", "hi", check=True)
    assert ex.stdout == "hi\n"
    dup = containerd.ctr("tasks", "exec", "--exec-id", "e1", t2, "/bin/echo", "again")
    assert dup.returncode == 0, "a finished exec id is deleted by ctr and may be reused"

    containerd.ctr("tasks", "pause", t2, check=True)
    assert "PAUSED" in containerd.ctr("tasks", "ls", check=True).stdout
    containerd.ctr("tasks", "resume", t2, check=True)
    assert "RUNNING" in containerd.ctr("tasks", "ls", check=True).stdout

    metrics = containerd.ctr("tasks", "metrics", t2, check=True).stdout
    assert "memory.usage_in_bytes" in metrics or "memory.usage" in metrics
    assert "pids.current" in metrics

    shim_pid = int((bundle / "shim.pid").read_text())
    with open(f"/proc/{shim_pid}/oom_score_adj") as f:
        shim_score = int(f.read())
    assert containerd.proc is not None
    with open(f"/proc/{containerd.proc.pid}/oom_score_adj") as f:
        daemon_score = int(f.read())
    assert shim_score == min(daemon_score + 1, 1000)

    containerd.ctr("tasks", "kill", "-s", "SIGKILL", t2, check=True)
    wait_for(lambda: "STOPPED" in containerd.ctr("tasks", "ls").stdout, what="task stopped")
    containerd.ctr("tasks", "rm", t2, check=True)
    containerd.ctr("containers", "rm", t2, check=True)
    wait_for(lambda: "/tasks/delete" in events.topics(t2), what="delete event")
    topics = events.topics(t2)
    assert topics[:2] == ["/tasks/create", "/tasks/start"]
    assert topics.count("/tasks/exit") == 3  # e1, the second exec, and init
    assert topics[-1] == "/tasks/delete"
    for want in ("/tasks/exec-added", "/tasks/exec-started", "/tasks/paused", "/tasks/resumed"):
        assert want in topics
    # The shim serves no task any more and exits after its linger.
    wait_for(lambda: not is_our_shim(shim_pid), what="idle shim exit")
    assert not (containerd.state / "s" / address.rsplit("/", 1)[1]).exists()


def test_tasks_of_a_namespace_share_one_shim(containerd: Containerd) -> None:
    s1, s2, s3 = unique("s1"), unique("s2"), unique("s3")
    for name in (s1, s2):
        assert run(containerd, "-d", name, "/bin/sleep", "300").returncode == 0
    a1 = (containerd.bundle(s1) / "address").read_text()
    a2 = (containerd.bundle(s2) / "address").read_text()
    assert a1 == a2
    assert len(containerd.shim_pids()) == 1
    other = run(containerd, "-d", s3, "/bin/sleep", "300", namespace="other")
    assert other.returncode == 0, other.stderr
    assert (containerd.bundle(s3, "other") / "address").read_text() != a1
    containerd.ctr("-n", "other", "tasks", "kill", "-s", "SIGKILL", s3)
    wait_for(
        lambda: "STOPPED" in containerd.ctr("-n", "other", "tasks", "ls").stdout, what="s3 stopped"
    )
    containerd.ctr("-n", "other", "tasks", "rm", s3, check=True)


def test_bad_input_is_refused(containerd: Containerd) -> None:
    b1, b2 = unique("b1"), unique("b2")
    assert run(containerd, "-d", b1, "/bin/sleep", "300").returncode == 0
    missing = run(containerd, "--rm", b2, "/no/such/binary")
    assert missing.returncode != 0
    assert "no such file" in missing.stderr.lower() or "not found" in missing.stderr.lower()
    kill = containerd.ctr("tasks", "kill", "nosuch")
    assert kill.returncode != 0
    assert "not found" in kill.stderr
    checkpoint = containerd.ctr("tasks", "checkpoint", b1)
    assert checkpoint.returncode != 0
    first = containerd.ctr("tasks", "exec", "-d", "--exec-id", "x1", b1, "/bin/sleep", "100")
    assert first.returncode == 0, first.stderr
    reused = containerd.ctr("tasks", "exec", "-d", "--exec-id", "x1", b1, "/bin/sleep", "100")
    assert reused.returncode != 0
    assert "already exists" in reused.stderr


def test_shim_killed_mid_run_reports_exit_once(containerd: Containerd, events: Events) -> None:
    k1 = unique("k1")
    assert run(containerd, "-d", k1, "/bin/sleep", "300").returncode == 0
    bundle = containerd.bundle(k1)
    shim_pid = int((bundle / "shim.pid").read_text())
    init_pid = int((bundle / "init.pid").read_text())
    os.kill(shim_pid, signal.SIGKILL)
    wait_for(lambda: "/tasks/delete" in events.topics(k1), what="cleanup after dead shim")
    assert events.topics(k1).count("/tasks/exit") == 1
    wait_for(lambda: not bundle.exists(), what="bundle cleanup")
    wait_for(
        lambda: not os.path.exists(f"/proc/{init_pid}") or _zombie(init_pid),
        what="container killed",
    )
    assert k1 not in containerd.ctr("tasks", "ls", "-q").stdout.split()


def test_daemon_restart_reconnects_and_reports_one_exit(containerd: Containerd) -> None:
    r1 = unique("r1")
    assert run(containerd, "-d", r1, "/bin/sleep", "300").returncode == 0
    shim_pid = int((containerd.bundle(r1) / "shim.pid").read_text())
    containerd.restart()
    ls = containerd.ctr("tasks", "ls", check=True).stdout
    assert any(line.split()[:1] == [r1] and "RUNNING" in line for line in ls.splitlines()[1:]), ls
    assert is_our_shim(shim_pid), "the shim survives a daemon restart"
    ev = Events(containerd)
    try:
        wait_subscribed(containerd, ev)
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", r1, check=True)
        wait_for(lambda: "/tasks/exit" in ev.topics(r1), what="exit after restart")
        containerd.ctr("tasks", "rm", r1, check=True)
        wait_for(lambda: "/tasks/delete" in ev.topics(r1), what="delete after restart")
        assert ev.topics(r1).count("/tasks/exit") == 1
    finally:
        ev.close()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_terminal(containerd: Containerd) -> None:
    """``ctr run -t`` needs a terminal on ctr's side: drive it through a pty."""
    argv = [CTR, "-a", containerd.address, "run", "--runtime", RUNTIME, "--rootfs", "--rm", "-t"]
    argv += [str(containerd.rootfs), unique("tty1"), "/bin/sh", "-c"]
    out = b""
    with on_a_terminal([*argv, "[ -t 1 ] && echo is-a-tty; exit 5"]) as (proc, fd):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(20)
    assert b"is-a-tty" in out
    assert code == 5


@pytest.mark.slow
def test_many_containers_started_concurrently(containerd: Containerd) -> None:
    ids = [unique(f"c{i}") for i in range(30)]
    procs = [
        subprocess.Popen(
            [
                CTR,
                "-a",
                containerd.address,
                "run",
                "--runtime",
                RUNTIME,
                "--rootfs",
                "-d",
                str(containerd.rootfs),
                cid,
                "/bin/sleep",
                "300",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        for cid in ids
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    lines = containerd.ctr("tasks", "ls", check=True).stdout.splitlines()[1:]
    assert sorted(line.split()[0] for line in lines) == sorted(ids)
    assert all(line.split()[2] == "RUNNING" for line in lines)
    assert len(containerd.shim_pids()) == 1
    kills = [
        subprocess.Popen([CTR, "-a", containerd.address, "tasks", "kill", "-s", "SIGKILL", cid])
        for cid in ids
    ]
    for k in kills:
        assert k.wait(60) == 0
    wait_for(
        lambda: all(
            "STOPPED" in line for line in containerd.ctr("tasks", "ls").stdout.splitlines()[1:]
        ),
        timeout=30,
        what="all tasks stopped",
    )


def test_oom_kill_is_reported(containerd: Containerd, events: Events) -> None:
    from pycontainerd.runtime.shim import cgroups

    oom1 = unique("oom1")

    if cgroups.is_unified():
        pytest.skip("OOM events are watched on cgroup v1 only")
    hog = 'a=xxxxxxxxxxxxxxxx; while true; do a="$a$a"; done'
    res = run(
        containerd,
        "--rm",
        f"--memory-limit={16 << 20}",
        oom1,
        "/bin/sh",
        "-c",
        hog,
        timeout=60,
    )
    assert res.returncode == 137, res.stderr
    wait_for(lambda: "/tasks/oom" in events.topics(oom1), what="/tasks/oom")
