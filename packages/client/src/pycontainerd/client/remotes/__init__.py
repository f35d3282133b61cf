"""Moved to ``pycontainerd.remotes`` (pycontainerd-remotes), re-exported here."""

from __future__ import annotations
