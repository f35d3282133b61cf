"""Namespaced metadata for pycontainerd.

The SQLite metadata database (:mod:`pycontainerd.metadata.db`), the namespaced
stores built on it, and the Namespaces, Images, Containers and Leases gRPC
services (:mod:`pycontainerd.metadata.services`).
"""

from __future__ import annotations
