"""Moved to ``pycontainerd.remotes.auth`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.auth import *  # noqa: F403
