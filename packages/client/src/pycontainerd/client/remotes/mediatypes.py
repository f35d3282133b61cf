"""Moved to ``pycontainerd.remotes.mediatypes`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations

from pycontainerd.remotes.mediatypes import *  # noqa: F403
