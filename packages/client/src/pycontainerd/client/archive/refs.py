"""Moved to ``pycontainerd.remotes.archive.refs`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.archive.refs import *  # noqa: F403
