"""Event exchange and Events service for pycontainerd."""

from __future__ import annotations
