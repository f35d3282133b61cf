"""Our ``ctr`` and containerd's Go ``ctr`` print the same against the same daemon.

Both run against a real containerd (and, where our daemon serves the
command, against ours). Output must be byte-identical where scripts parse it.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.services.leases.v1 import leases_pb2, leases_pb2_grpc

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


def held_ingest(address: str, go: Run, lease: str, ref: str, data: bytes) -> int:
    """``ctr content ingest ref`` of ``data``, its digest put in ``lease`` first; the exit code.

    Nothing references a blob the Go ctr ingests, so the next collection
    removes it, in containerd as in ours: the first one runs ``startup_delay``
    (100 ms) after boot, which on a loaded machine can come after the ingest,
    and any deletion triggers another. The listings compared would then hold
    no content, or lose it between two runs of ``same_second``. A digest added
    to a lease before the blob exists holds it from the start (the Go ctr has
    no command for Leases.AddResource).
    """
    dgst = "sha256:" + hashlib.sha256(data).hexdigest()
    with grpc.insecure_channel(f"unix://{address}") as channel:
        leases_pb2_grpc.LeasesStub(channel).AddResource(
            leases_pb2.AddResourceRequest(
                id=lease, resource=leases_pb2.Resource(id=dgst, type="content")
            ),
            metadata=(("containerd-namespace", "default"),),
            timeout=30,
        )
    return go(address, "content", "ingest", ref, stdin=data).returncode


@pytest.fixture(scope="module")
def seeded(containerd: RealContainerd, go: Run) -> RealContainerd:
    """Namespaces, labels, blobs and leases made with the Go ctr."""
    a = containerd.address
    assert go(a, "namespaces", "create", "alpha", "team=x", "tier=1").returncode == 0
    assert go(a, "namespaces", "create", "a-much-longer-namespace-name").returncode == 0
    assert go(a, "leases", "create", "--id", "l1", "k=v").returncode == 0
    assert held_ingest(a, go, "l1", "r1", b"hello\n") == 0
    assert held_ingest(a, go, "l1", "r2", b"x" * 1_300_000) == 0
    assert len(go(a, "content", "ls", "-q").stdout.split()) == 2
    return containerd


@pytest.fixture(scope="module")
def ours_seeded(ours: Daemon, go: Run) -> Daemon:
    """Our daemon with a blob held by a lease (made with the Go ctr)."""
    a = ours.address
    assert go(a, "leases", "create", "--id", "seed", "k=v").returncode == 0
    assert held_ingest(a, go, "seed", "seed", b"seed\n") == 0
    assert go(a, "content", "ls", "-q").stdout.split() == [
        b"sha256:" + hashlib.sha256(b"seed\n").hexdigest().encode()
    ]
    return ours


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
def test_same_stdout_against_our_daemon(
    ours_seeded: Daemon, args: list[str], go: Run, py: Run
) -> None:
    a = ours_seeded.address
    g, p = same_second(a, args, go, py)
    assert g.returncode == 0, g.stderr
    assert p.returncode == 0, p.stderr
    assert p.stdout == g.stdout
