"""gRPC adaptors of the daemon's own services (imported only by plugin init functions)."""

from __future__ import annotations
