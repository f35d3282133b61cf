"""Moved to ``pycontainerd.remotes.hosts`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.hosts import *  # noqa: F403
