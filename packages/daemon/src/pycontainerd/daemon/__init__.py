"""The pycontainerd daemon: the `containerd` command."""

from __future__ import annotations
