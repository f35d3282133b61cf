"""The `ctr` command for containerd and pycontainerd."""

from __future__ import annotations
