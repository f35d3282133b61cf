"""Talking to OCI registries: references, media types, ``hosts.toml``, auth and the resolver.

The pieces follow containerd's ``remotes/docker`` package: a *resolver* turns
a reference into a root descriptor, a *fetcher* streams blobs of one
repository and a *pusher* uploads them. Which servers serve a registry host
(mirrors first, then the upstream) comes from ``hosts.toml``
(:mod:`pycontainerd.remotes.hosts`).
"""

from __future__ import annotations
