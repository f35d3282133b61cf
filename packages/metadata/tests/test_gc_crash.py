"""A collector killed with SIGKILL between the sweep and the backend cleanup, or in the middle
of the cleanup, leaves only unreferenced garbage; the next collection removes it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from pycontainerd.content.local import LocalStore
from pycontainerd.metadata.db import MetadataDB
from pycontainerd.metadata.gc import ROOT_LABEL, Collector

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.metadata.db import Tx

BLOBS = 1000

# Runs a collection whose backend deletes stop (and wait to be killed) after
# argv[3] deletions; prints "mid" when it stops.
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from pycontainerd.content.local import LocalStore
    from pycontainerd.metadata.db import MetadataDB
    from pycontainerd.metadata.gc import Collector

    stop_after = int(sys.argv[3])

    class Stalling(LocalStore):
        deleted = 0

        async def delete(self, dgst):
            if self.deleted == stop_after:
                print("mid", flush=True)
                sys.stdin.readline()  # never answered: we are killed here
            await super().delete(dgst)
            self.deleted += 1

    async def main():
        db = MetadataDB.open(Path(sys.argv[1]))
        await Collector(db, Stalling(Path(sys.argv[2]))).collect()
        print("finished", flush=True)

    asyncio.run(main())
    """
)


def populate(db: MetadataDB, store: LocalStore, n: int) -> tuple[set[str], set[str]]:
    """``n`` blobs on disk and in namespace ``ns``; every second one is a GC root."""
    rows: list[tuple[str, str, int, str]] = []
    roots: set[str] = set()
    garbage: set[str] = set()
    for i in range(n):
        data = f"blob {i}".encode()
        dgst = "sha256:" + hashlib.sha256(data).hexdigest()
        path = store.blob_path(dgst)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        labels = f'{{"{ROOT_LABEL}":"1"}}' if i % 2 else "{}"
        (roots if i % 2 else garbage).add(dgst)
        rows.append(("ns", dgst, len(data), labels))

    def run(tx: Tx) -> None:
        tx.execute("INSERT INTO namespaces (name, created_at, updated_at) VALUES ('ns', 0, 0)")
        tx.executemany(
            "INSERT INTO blobs (namespace, digest, size, labels, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, 0, 0)",
            rows,
        )

    db.update(run)
    return roots, garbage


def listed(db: MetadataDB) -> set[str]:
    return db.view(lambda tx: {str(d) for (d,) in tx.execute("SELECT digest FROM blobs")})


def on_disk(store: LocalStore) -> set[str]:
    return {"sha256:" + name for name in os.listdir(store.root / "blobs" / "sha256")}


def kill_mid_collection(db_path: Path, store: LocalStore, stop_after: int) -> None:
    """Run CHILD and SIGKILL it once it stalls."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db_path), str(store.root), str(stop_after)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "mid"
            child.send_signal(signal.SIGKILL)
        finally:
            child.wait(10)
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stop_after", [0, BLOBS // 4])
async def test_sigkill_during_collection(tmp_path: Path, stop_after: int) -> None:
    db_path = tmp_path / "meta.db"
    store = LocalStore(tmp_path / "content")
    db = MetadataDB.open(db_path)
    roots, garbage = populate(db, store, BLOBS)
    db.close()

    await asyncio.to_thread(kill_mid_collection, db_path, store, stop_after)

    db = MetadataDB.open(db_path)
    try:
        assert db.integrity_check() == "ok"
        # The sweep committed: only roots are listed, and every listed blob is on disk.
        assert listed(db) == roots
        disk = on_disk(store)
        assert roots <= disk
        assert len(disk - roots) == len(garbage) - stop_after
        # The next collection finishes the job.
        stats = await Collector(db, store).collect()
        assert stats.backend_blobs == len(garbage) - stop_after
        assert stats.blobs == 0
        assert on_disk(store) == roots == listed(db)
    finally:
        db.close()
