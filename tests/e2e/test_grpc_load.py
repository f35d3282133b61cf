"""Load on the daemon's gRPC socket: many Go ``ctr`` processes at once, and thousands of idle peers.

Both tests are marked ``load`` and hold :func:`testing.load_exclusion`
exclusively, so no latency-bound test (the attack suite's witnesses) runs
beside them; the rest of the suite goes on in parallel. Each is bounded in
time (``DURATION`` of load, a few seconds for the idle connections).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import socket
import struct
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Final

import pytest

from pycontainerd.daemon import testing

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.conftest import Daemon, MakeDaemon

pytestmark = [pytest.mark.system, pytest.mark.load, pytest.mark.slow]

CLIENTS: Final = 100
DURATION: Final = 60.0
IDLE_CONNECTIONS: Final = 5000


def _ctr(address: str, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [testing.CTR, "-a", address, "-n", "load", *args],
        input=data,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_hundred_ctr_clients_mixed_operations(make_daemon: MakeDaemon, tmp_path: Path) -> None:
    """100 concurrent Go ctr processes, mixed operations, for DURATION seconds: zero errors."""
    d: Daemon = make_daemon()
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    blob = os.urandom(256 << 10)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    assert d.commit_rooted(blob, root="load", namespace="load") == digest

    errors: list[str] = []
    counts = [0] * CLIENTS
    deadline = time.monotonic() + DURATION

    def step(slot: int, n: int) -> list[subprocess.CompletedProcess[bytes]]:
        key = f"s{slot}-{n}"
        kind = (slot + n) % 5
        if kind == 0:
            return [_ctr(d.address, "version")]
        if kind == 1:
            data = os.urandom(64 << 10)
            got = _ctr(d.address, "content", "get", digest)
            if got.returncode == 0 and got.stdout != blob:
                got = subprocess.CompletedProcess(got.args, 1, b"", b"content get: wrong bytes")
            return [_ctr(d.address, "content", "ingest", key, data=data), got]
        if kind == 2:
            return [_ctr(d.address, "images", "ls")]
        if kind == 3:
            create = _ctr(
                d.address, "containers", "create", "--rootfs", str(rootfs), key, "/bin/true"
            )
            return [create, _ctr(d.address, "containers", "rm", key)]
        prepare = _ctr(d.address, "snapshots", "prepare", f"{key}-a")
        commit = _ctr(d.address, "snapshots", "commit", f"{key}-c", f"{key}-a")
        return [prepare, commit, _ctr(d.address, "snapshots", "rm", f"{key}-c")]

    def client(slot: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            errors.extend(
                f"{res.args[5:]}: {res.stderr.decode(errors='replace')}"
                for res in step(slot, n)
                if res.returncode != 0
            )
            counts[slot] += 1
            n += 1

    with testing.load_exclusion(exclusive=True):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, f"{len(errors)} failed ctr runs, first: {errors[:5]}"
    assert all(counts), "every client ran at least one operation"
    assert "Fatal error" not in d.log()


def test_five_thousand_idle_connections(make_daemon: MakeDaemon) -> None:
    """5000 open HTTP/2 connections doing nothing: ctr version still answers."""
    d: Daemon = make_daemon()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = IDLE_CONNECTIONS + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    preface = (
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + struct.pack(">I", 0)[1:] + b"\x04\x00" + bytes(4)
    )
    held: list[socket.socket] = []
    try:
        with testing.load_exclusion(exclusive=True):
            for _ in range(IDLE_CONNECTIONS):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                held.append(s)
                s.connect(d.address)  # blocking: waits while the backlog is full
                s.settimeout(30)
                s.sendall(preface)
            # Every connection was taken: each got the server's SETTINGS, its first
            # WINDOW_UPDATE and the ack of ours, and no GOAWAY.
            for s in held:
                kinds = []
                for _ in range(3):
                    head = _recv_exactly(s, 9)
                    _recv_exactly(s, int.from_bytes(head[:3], "big"))
                    kinds.append((head[3], head[4]))
                assert kinds == [(4, 0), (8, 0), (4, 1)]
            started = time.monotonic()
            res = subprocess.run(
                [testing.CTR, "--timeout", "5s", "-a", d.address, "version"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert res.returncode == 0, res.stderr
            assert time.monotonic() - started < 5
            for s in held[:: IDLE_CONNECTIONS // 50]:  # still open, nothing sent to them
                s.settimeout(0.01)
                with pytest.raises(TimeoutError):
                    _peek_goaway(s)
    finally:
        for s in held:
            with contextlib.suppress(OSError):
                s.close()
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, "connection closed"
        out += chunk
    return out


def _peek_goaway(s: socket.socket) -> bytes:
    """Whatever the server sent since its SETTINGS (TimeoutError: nothing, still open)."""
    return s.recv(64)
