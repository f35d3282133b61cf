"""The pluggy markers of the one pluggy project, ``"pycontainerd"``."""

from __future__ import annotations

from typing import Final

import pluggy

PROJECT: Final = "pycontainerd"
ENTRY_POINT_GROUP: Final = "pycontainerd.plugins"

hookspec: Final = pluggy.HookspecMarker(PROJECT)
hookimpl: Final = pluggy.HookimplMarker(PROJECT)
