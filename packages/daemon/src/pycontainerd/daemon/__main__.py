"""``python -m pycontainerd.daemon`` runs the ``containerd`` command."""

from __future__ import annotations

from pycontainerd.daemon.main import main

if __name__ == "__main__":
    main()
