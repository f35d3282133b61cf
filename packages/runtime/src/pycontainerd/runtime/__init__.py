"""Tasks service, runtime v2 manager and the Python shim containerd-shim-pyrunc-v2."""

from __future__ import annotations
