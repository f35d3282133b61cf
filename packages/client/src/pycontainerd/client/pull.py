"""Moved to ``pycontainerd.remotes.pull`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.pull import *  # noqa: F403
