from __future__ import annotations

import re
import subprocess
import sys
from typing import TYPE_CHECKING

from pycontainerd.daemon.version import API_VERSION, _git_revision, server_version, version

if TYPE_CHECKING:
    from pathlib import Path


def test_git_revision_from_branch_ref_and_packed_refs(tmp_path: Path) -> None:
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "refs" / "heads" / "main").write_text("a" * 40 + "\n")
    nested = tmp_path / "src" / "pkg"
    nested.mkdir(parents=True)
    assert _git_revision(nested) == "a" * 40
    (git / "refs" / "heads" / "main").unlink()
    (git / "packed-refs").write_text(f"# pack-refs\n{'b' * 40} refs/heads/main\n")
    assert _git_revision(nested) == "b" * 40
    (git / "HEAD").write_text("c" * 40 + "\n")  # detached
    assert _git_revision(nested) == "c" * 40


def test_help_and_version_stay_light() -> None:
    probe = (
        "import sys\n"
        "from pycontainerd.daemon.main import cli\n"
        "try:\n    cli(['--help'], prog_name='containerd')\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('grpc', 'google.protobuf', 'asyncio', 'pycontainerd.config.model')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert "HEAVY []" in out
    assert "config" in out
    assert "oci-hook" in out


def test_server_version_is_the_api_level_with_ours_as_build_metadata() -> None:
    reported = server_version()
    assert reported.startswith(API_VERSION + "+pycontainerd.")
    # semver 2.0: v<major>.<minor>.<patch>+<dot-separated [0-9A-Za-z-] identifiers>
    assert re.fullmatch(r"v\d+\.\d+\.\d+\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*", reported)
    assert version() in reported or "-" in reported
