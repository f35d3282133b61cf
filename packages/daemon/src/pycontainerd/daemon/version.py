"""The daemon's version and revision (``containerd --version``, the Version service)."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Final

PACKAGE: Final = "pycontainerd"
"""What ``containerd --version`` prints where upstream prints its Go module path."""

REVISION_ENV: Final = "PYCONTAINERD_REVISION"


@functools.cache
def version() -> str:
    """The installed version of ``pycontainerd-daemon``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pycontainerd-daemon")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0.0.0+unknown"


def _git_revision(start: Path) -> str | None:
    for parent in (start, *start.parents):
        git = parent / ".git"
        if git.is_file():  # a worktree: "gitdir: <path>"
            text = git.read_text().strip()
            if not text.startswith("gitdir:"):
                return None
            git = (parent / text.removeprefix("gitdir:").strip()).resolve()
        if not git.is_dir():
            continue
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.removeprefix("ref:").strip()
        for base in (git, _common_dir(git)):
            ref_file = base / ref
            if ref_file.is_file():
                return ref_file.read_text().strip()
            packed = base / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    sha, _, name = line.partition(" ")
                    if name == ref:
                        return sha
        return None
    return None


def _common_dir(git: Path) -> Path:
    common = git / "commondir"
    if common.is_file():
        return (git / common.read_text().strip()).resolve()
    return git


@functools.cache
def revision() -> str:
    """The source revision.

    ``$PYCONTAINERD_REVISION`` if set, else the git commit of an editable
    checkout (read from ``.git`` without running git), else ``unknown``.
    """
    env = os.environ.get(REVISION_ENV)
    if env:
        return env
    try:
        found = _git_revision(Path(__file__).resolve().parent)
    except OSError:
        found = None
    return found or "unknown"
