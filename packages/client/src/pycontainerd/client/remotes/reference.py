"""Moved to ``pycontainerd.remotes.reference`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.reference import *  # noqa: F403
