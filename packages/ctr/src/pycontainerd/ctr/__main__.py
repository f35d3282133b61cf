"""``python -m pycontainerd.ctr``: the same as the ``ctr`` command."""

from __future__ import annotations

from pycontainerd.ctr.main import main

main()
