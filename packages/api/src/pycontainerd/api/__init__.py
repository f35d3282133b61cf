"""containerd's API v1 on the wire: protos, generated code, errgrpc, typeurl, ttrpc."""

from __future__ import annotations
