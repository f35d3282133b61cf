"""The Pants build stays in step with the uv workspace.

Pants' third-party pins are generated from uv.lock (tools/pants_requirements.py)
and locked by ``./pants generate-lockfiles``; both must follow a dependency change.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.network


def test_requirements_match_uv_lock(full_checkout: Path, uv: str) -> None:
    proc = subprocess.run(
        [sys.executable, "tools/pants_requirements.py", "--check"],
        cwd=full_checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _normalise(requirement: str) -> str:
    return re.sub(r"\s*;\s*", ";", requirement).replace("'", '"')


def test_lockfile_was_generated_from_the_requirements(checkout_files: Path) -> None:
    reqs = checkout_files / "3rdparty" / "python" / "requirements.txt"
    wanted = sorted(
        _normalise(line) for line in reqs.read_text().splitlines() if line and line[0] != "#"
    )
    lock = (checkout_files / "3rdparty" / "python" / "default.lock").read_text()
    header = re.search(
        r"--- BEGIN PANTS LOCKFILE METADATA: DO NOT EDIT OR REMOVE ---\n(.*?)\n"
        r"// --- END PANTS LOCKFILE METADATA ---",
        lock,
        re.DOTALL,
    )
    assert header is not None
    metadata = json.loads("\n".join(line[3:] for line in header.group(1).splitlines()))
    locked = sorted(_normalise(r) for r in metadata["generated_with_requirements"])
    assert locked == wanted, "run `./pants generate-lockfiles`"
