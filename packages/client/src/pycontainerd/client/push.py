"""Moved to ``pycontainerd.remotes.push`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.push import *  # noqa: F403
