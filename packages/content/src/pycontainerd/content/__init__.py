"""Local content store and Content service for pycontainerd."""

from __future__ import annotations
