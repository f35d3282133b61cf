"""Moved to ``pycontainerd.remotes.archive.importer`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.archive.importer import *  # noqa: F403
