"""Moved to ``pycontainerd.remotes.imagewalk`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.imagewalk import *  # noqa: F403
