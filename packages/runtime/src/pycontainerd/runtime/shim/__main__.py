"""``python -m pycontainerd.runtime.shim``: the same as ``containerd-shim-pyrunc-v2``."""

from __future__ import annotations

import sys

from pycontainerd.runtime.shim.main import main

sys.exit(main())
