"""``[proxy_plugins]``: a snapshotter served by another process, driven by the Go ctr."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from tests.e2e.conftest import MakeDaemon

# A third-party snapshotter: another process serving the Snapshots service with
# a native snapshotter it calls "ext" (it answers any name, as external ones do).
BACKEND = textwrap.dedent(
    """
    import asyncio, sys
    from pycontainerd.api import h2grpc
    from pycontainerd.snapshots.native import NativeSnapshotter
    from pycontainerd.snapshots.service import SnapshotsService

    class AnyName(dict):
        def __missing__(self, key):
            return self["ext"]

    async def main() -> None:
        server = h2grpc.Server()
        SnapshotsService(AnyName(ext=NativeSnapshotter(sys.argv[2]))).register(server)
        await server.listen_unix(sys.argv[1])
        print("ready", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


def test_snapshot_proxy_plugin(make_daemon: MakeDaemon, short_dir: Path) -> None:
    sock = str(short_dir / "ext.sock")
    with subprocess.Popen(
        [sys.executable, "-c", BACKEND, sock, str(short_dir / "ext-root")],
        stdout=subprocess.PIPE,
        text=True,
    ) as backend:
        try:
            _check_proxy(make_daemon, short_dir, sock, backend)
        finally:
            if backend.poll() is None:
                backend.kill()
                backend.wait()


def _check_proxy(
    make_daemon: MakeDaemon, short_dir: Path, sock: str, backend: subprocess.Popen[str]
) -> None:
    if True:
        assert backend.stdout is not None
        assert backend.stdout.readline().strip() == "ready"
        d = make_daemon(
            config=(
                f'[proxy_plugins.ext]\n  type = "snapshot"\n  address = "{sock}"\n'
                '[proxy_plugins.odd]\n  type = "nonsense"\n  address = "/nowhere"\n'
            )
        )
        plugins = d.ok("plugins", "ls")
        rows = [line.split() for line in plugins.splitlines()[1:]]
        assert ["io.containerd.snapshotter.v1", "ext", "-", "ok"] in rows
        assert not any("odd" in row for row in rows)
        assert "unsupported proxy plugin type" in d.log()

        d.ok("snapshots", "--snapshotter", "ext", "prepare", "k1")
        assert "k1" in d.ok("snapshots", "--snapshotter", "ext", "ls").split()
        mounts = d.ok("snapshots", "--snapshotter", "ext", "mounts", "/mnt", "k1")
        assert str(short_dir / "ext-root") in mounts  # the backend's own directories
        # the backend holds the snapshot (under the metadata layer's key)
        snaps = short_dir / "ext-root" / "snapshots"
        assert len(os.listdir(snaps)) == 1
        d.ok("snapshots", "--snapshotter", "ext", "rm", "k1")
        deadline = time.monotonic() + 30
        while os.listdir(snaps) and time.monotonic() < deadline:
            time.sleep(0.05)  # the backend snapshot goes with the next collection
        assert os.listdir(snaps) == []
        # a backend that is gone: calls fail with a clear error, the daemon stays up
        backend.kill()
        backend.wait()
        res = d.ctr("snapshots", "--snapshotter", "ext", "prepare", "k2")
        assert res.returncode != 0
        assert "unavailable" in res.stderr or "connect" in res.stderr, res.stderr
        assert d.ok("version")
