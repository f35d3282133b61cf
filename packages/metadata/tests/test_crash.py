"""A writer killed with SIGKILL in the middle of a transaction leaves a consistent database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

from pycontainerd.metadata.db import MetadataDB

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.metadata.db import Tx

# Commits BATCHES complete transactions, then starts one more, writes enough rows
# that SQLite must spill dirty pages into the WAL file, says "mid" and waits to be
# killed. Each transaction bumps a counter and inserts ROWS images and ROWS
# containers, so any partial transaction would show up as a count mismatch.
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pycontainerd.metadata.db import MetadataDB

    ROWS = 400
    db = MetadataDB.open(Path(sys.argv[1]))

    def batch(tx, n, stop_midway):
        tx.execute("PRAGMA cache_size = 4")
        tx.execute(
            "INSERT OR IGNORE INTO namespaces (name, created_at, updated_at) VALUES ('ns', 0, 0)"
        )
        tx.execute(
            "INSERT INTO sequences VALUES ('batches', 1)"
            " ON CONFLICT (name) DO UPDATE SET value = value + 1"
        )
        for i in range(ROWS):
            tx.execute(
                "INSERT INTO images VALUES ('ns', ?, 'm', 'sha256:00', 1, '{}', ?, 0, 0)",
                (f"img-{n}-{i}", "x" * 200),
            )
            tx.execute(
                "INSERT INTO containers (namespace, id, runtime_name, spec_value,"
                " created_at, updated_at) VALUES ('ns', ?, 'rt', ?, 0, 0)",
                (f"c-{n}-{i}", b"y" * 500),
            )
            if stop_midway and i == ROWS // 2:
                print("mid", flush=True)
                sys.stdin.readline()  # never answered: we are killed here

    for n in range(3):
        db.update(lambda tx, n=n: batch(tx, n, False))
    db.update(lambda tx: batch(tx, 99, True))
    """
)


def test_sigkill_mid_transaction_leaves_consistent_db(tmp_path: Path) -> None:
    path = tmp_path / "meta.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "mid"
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size > 0  # uncommitted pages reached the WAL file
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()

    db = MetadataDB.open(path)
    try:
        assert db.integrity_check() == "ok"

        def counts(tx: Tx) -> tuple[int, int, int, int]:
            batches = tx.execute("SELECT value FROM sequences WHERE name = 'batches'").fetchone()
            images = tx.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            containers = tx.execute("SELECT COUNT(*) FROM containers").fetchone()[0]
            partial = tx.execute("SELECT COUNT(*) FROM images WHERE name LIKE 'img-99-%'")
            return batches[0], images, containers, partial.fetchone()[0]

        assert db.view(counts) == (3, 1200, 1200, 0)
        assert db.view(lambda tx: tx.execute("PRAGMA foreign_key_check").fetchall()) == []
        # And it is writable again.
        db.update(lambda tx: tx.execute("DELETE FROM images WHERE name = 'img-0-0'"))
    finally:
        db.close()
