"""The btrfs snapshotter for pycontainerd (optional)."""

from __future__ import annotations
