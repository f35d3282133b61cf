"""Moved to ``pycontainerd.remotes.archive`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.archive import *  # noqa: F403
