"""Proxies: the core contracts implemented over containerd's gRPC API.

Each ``Remote*`` class satisfies the same Protocol as the daemon-side
implementation (``pycontainerd.core.content.Store``,
``pycontainerd.core.snapshots.Snapshotter``...), so the conformance suites
run against local and remote stores alike (containerd's ``core/*/proxy``).
They are obtained from a :class:`pycontainerd.client.Client`, which supplies
the channel and the namespace/lease headers; failed calls raise
``pycontainerd.core.errdefs`` kinds.
"""

from __future__ import annotations
