"""Snapshotters (overlayfs, native), mounts, the walking differ and the Snapshots/Diff services."""

from __future__ import annotations
