"""``ctr`` subcommands, one module per command group; loaded only when run."""

from __future__ import annotations
