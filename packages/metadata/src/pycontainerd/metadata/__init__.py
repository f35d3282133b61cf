"""Namespaced metadata (SQLite), garbage collection and the Namespaces/Images/Containers/Leases services."""

from __future__ import annotations
