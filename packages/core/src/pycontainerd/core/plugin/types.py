"""Plugin types: containerd's versioned URIs."""

from __future__ import annotations

from enum import StrEnum


class PluginType(StrEnum):
    """What a registration provides. Plugins depend on types, not on ids.

    The values are containerd's, so ``disabled_plugins`` and ``ctr plugins ls``
    read exactly as upstream.
    """

    INTERNAL = "io.containerd.internal.v1"
    RUNTIME = "io.containerd.runtime.v2"
    SERVICE = "io.containerd.service.v1"
    GRPC = "io.containerd.grpc.v1"
    TTRPC = "io.containerd.ttrpc.v1"
    SNAPSHOT = "io.containerd.snapshotter.v1"
    MONITOR = "io.containerd.monitor.v1"
    DIFF = "io.containerd.differ.v1"
    METADATA = "io.containerd.metadata.v1"
    CONTENT = "io.containerd.content.v1"
    GC = "io.containerd.gc.v1"
    EVENT = "io.containerd.event.v1"
    LEASE = "io.containerd.lease.v1"
    STREAMING = "io.containerd.streaming.v1"
    TRACING_PROCESSOR = "io.containerd.tracing.processor.v1"
    NRI = "io.containerd.nri.v1"
    TRANSFER = "io.containerd.transfer.v1"
    SANDBOX_STORE = "io.containerd.sandbox.store.v1"
    SANDBOX_CONTROLLER = "io.containerd.sandbox.controller.v1"
    WARNING = "io.containerd.warning.v1"
    IMAGE_VERIFIER = "io.containerd.image-verifier.v1"
