"""Shared vocabulary for pycontainerd: plugin model, errdefs, identifiers, filters and contracts."""

from __future__ import annotations
