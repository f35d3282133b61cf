"""Moved to ``pycontainerd.remotes.archive.exporter`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.archive.exporter import *  # noqa: F403
