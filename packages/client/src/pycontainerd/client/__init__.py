"""Python client library for containerd and pycontainerd."""

from __future__ import annotations
