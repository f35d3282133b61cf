"""Daemon and client configuration for pycontainerd (never imports grpc)."""

from __future__ import annotations
