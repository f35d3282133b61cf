"""Moved to ``pycontainerd.remotes.unpack`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.unpack import *  # noqa: F403
