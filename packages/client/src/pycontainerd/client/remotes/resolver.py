"""Moved to ``pycontainerd.remotes.resolver`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.resolver import *  # noqa: F403
