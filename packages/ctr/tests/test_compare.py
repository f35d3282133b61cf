"""Our ``ctr`` and containerd's Go ``ctr`` print the same against the same daemon.

Both run against a real containerd (and, where our daemon serves the
command, against ours). Output must be byte-identical where scripts parse it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable

    from pycontainerd.client.testing import RealContainerd
    from pycontainerd.daemon.testing import Daemon

pytestmark = pytest.mark.system

if TYPE_CHECKING:
    Run = Callable[..., subprocess.CompletedProcess[bytes]]


#: How long ``same_second`` tries for a window in which the AGE column did not tick.
AGE_WINDOW_DEADLINE = 90.0


def same_second(
    address: str, args: list[str], go: Run, py: Run
) -> tuple[subprocess.CompletedProcess[bytes], subprocess.CompletedProcess[bytes]]:
    """Go's and our output, taken while the AGE column did not change (Go before and after).

    ``content ls`` prints each blob's age in whole seconds, so a Go run, ours
    and a Go run again must fit between two ticks. On a loaded machine a try
    can take about a second and many tries in a row straddle a tick: keep
    trying until a deadline (past a minute of age, Go prints "About a minute",
    which holds for a minute) instead of a fixed number of tries.
    """
    deadline = time.monotonic() + AGE_WINDOW_DEADLINE
    while True:
        before = go(address, *args)
        ours = py(address, *args)
        after = go(address, *args)
        if before.stdout == after.stdout or time.monotonic() > deadline:
            return after, ours


@pytest.fixture(scope="module")
def seeded(containerd: RealContainerd, go: Run) -> RealContainerd:
    """Namespaces, labels, blobs and leases made with the Go ctr."""
    a = containerd.address
    assert go(a, "namespaces", "create", "alpha", "team=x", "tier=1").returncode == 0
    assert go(a, "namespaces", "create", "a-much-longer-namespace-name").returncode == 0
    assert go(a, "content", "ingest", "r1", stdin=b"hello\n").returncode == 0
    big = b"x" * 1_300_000
    assert go(a, "content", "ingest", "r2", stdin=big).returncode == 0
    assert go(a, "leases", "create", "--id", "l1", "k=v").returncode == 0
    return containerd


@pytest.mark.parametrize(
    "args",
    [
        ["namespaces", "ls"],
        ["ns", "ls", "-q"],
        ["plugins", "ls"],
        ["plugins", "ls", "-q"],
        ["plugins", "ls", "type==io.containerd.snapshotter.v1", "id==content"],
        ["content", "ls"],
        ["content", "ls", "-q"],
        ["images", "ls"],
        ["snapshots", "ls"],
        ["leases", "ls"],
        ["leases", "ls", "-q"],
    ],
    ids=" ".join,
)
def test_same_stdout_as_go_ctr(seeded: RealContainerd, args: list[str], go: Run, py: Run) -> None:
    g, p = same_second(seeded.address, args, go, py)
    assert g.returncode == 0, g.stderr
    assert p.returncode == 0, p.stderr
    assert p.stdout == g.stdout


def test_version_server_lines_match(seeded: RealContainerd, go: Run, py: Run) -> None:
    g = go(seeded.address, "version").stdout.decode().splitlines()
    p = py(seeded.address, "version").stdout.decode().splitlines()
    assert g[0] == p[0] == "Client:"
    assert p[1].startswith("  Version:  ")
    assert g[4:] == p[4:]


def test_error_output_matches(seeded: RealContainerd, go: Run, py: Run) -> None:
    args = ["namespaces", "create", "alpha"]
    g = go(seeded.address, *args)
    p = py(seeded.address, *args)
    assert (p.returncode, p.stderr) == (g.returncode, g.stderr) == (1, g.stderr)
    assert p.stderr == b'ctr: namespace "alpha": already exists\n'


@pytest.mark.parametrize(
    "args",
    [
        ["namespaces", "ls"],
        ["plugins", "ls"],
        ["content", "ls"],
        ["leases", "ls"],
        ["images", "ls"],
    ],
    ids=" ".join,
)
def test_same_stdout_against_our_daemon(ours: Daemon, args: list[str], go: Run, py: Run) -> None:
    a = ours.address
    assert go(a, "content", "ingest", "seed", stdin=b"seed\n").returncode in (0, 1)
    g, p = same_second(a, args, go, py)
    assert g.returncode == 0, g.stderr
    assert p.returncode == 0, p.stderr
    assert p.stdout == g.stdout
