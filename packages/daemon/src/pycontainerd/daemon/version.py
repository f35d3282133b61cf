"""The daemon's version and revision (``containerd --version``, the Version service).

What the daemon reports as its version is the containerd API level it
implements with pycontainerd's own version as semver build metadata:
``v2.1.0+pycontainerd.0.1.0.dev0`` (:func:`server_version`). Clients that gate
features on the server's version (nerdctl and others parse it as semver,
dropping the leading ``v``; build metadata does not take part in comparisons)
see containerd 2.1, whose paths (Transfer, Streaming, Sandbox) we serve; a
person or a bug report still sees which pycontainerd answered. The revision
is pycontainerd's source revision. containerd's Go ``ctr version`` still
prints ``WARNING: version mismatch`` unless client and server strings are
equal, as it does between any two containerd builds.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Final

PACKAGE: Final = "pycontainerd"
"""What ``containerd --version`` prints where upstream prints its Go module path."""

REVISION_ENV: Final = "PYCONTAINERD_REVISION"

API_VERSION: Final = "v2.1.0"
"""The containerd release whose API pycontainerd implements."""


@functools.cache
def version() -> str:
    """The installed version of ``pycontainerd-daemon``."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("pycontainerd-daemon")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "0.0.0+unknown"


def server_version() -> str:
    """What the Version service reports: ``<API_VERSION>+pycontainerd.<version()>``.

    Characters semver does not allow in build metadata (``+``, ``_``) become ``-``.
    """
    ours = re.sub(r"[^0-9A-Za-z.-]", "-", version())
    return f"{API_VERSION}+pycontainerd.{ours}"


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
