"""The Python runtime v2 shim ``containerd-shim-pyrunc-v2`` (runtime ``io.containerd.pyrunc.v2``).

It speaks containerd's shim protocol: ``start`` and ``delete`` subcommands run
by the daemon, and a long-running server that serves ``containerd.task.v2.Task``
over ttrpc on top of ``runc``. Nothing here imports grpc; the ``start`` and
``delete`` paths import neither asyncio nor protobuf, so the per-container cost
of a shim that is already running is one short-lived interpreter.
"""

from __future__ import annotations
