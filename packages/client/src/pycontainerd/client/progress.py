"""Moved to ``pycontainerd.remotes.progress`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.progress import *  # noqa: F403
