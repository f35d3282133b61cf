"""Moved to ``pycontainerd.remotes.testing`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.testing import *  # noqa: F403
