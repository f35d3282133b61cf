"""Where a shim keeps its socket, lock, log and runc state.

containerd 1.6/1.7's runc shim puts every socket in ``/run/containerd/s``
whatever the daemon's ``state`` is (upstream #5818), so two daemons on one
machine share a directory and a daemon with a private state leaks sockets into
the system's. This shim derives everything from the daemon's state directory
instead:

- the bundle containerd gives us is ``<state>/io.containerd.runtime.v2.task/<ns>/<id>``,
  so ``<state>`` is three levels up when the parent of the namespace directory
  has that name (true for containerd and for pycontainerd);
- otherwise (a bundle somewhere else) ``<state>`` is the directory of the
  daemon's socket (``-address``).

Under ``<state>``: sockets, locks and logs in ``s/`` and runc's state in
``runc/<namespace>``. Socket names are the SHA-256 of
``<address>/<namespace>/<group>`` like upstream's, so a daemon always finds the
same shim for the same group.
"""

from __future__ import annotations

import os

try:  # the builtin module is lighter than hashlib (which loads OpenSSL)
    from _sha2 import sha256  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - Python < 3.12
    try:
        from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]
    except ImportError:
        from hashlib import sha256  # type: ignore[assignment, unused-ignore]

__all__ = [
    "TASK_PLUGIN_DIR",
    "group_key",
    "runc_root",
    "socket_dir",
    "socket_path",
    "state_dir",
]

TASK_PLUGIN_DIR = "io.containerd.runtime.v2.task"
SOCKET_PATH_MAX = 104
"""containerd refuses unix socket paths longer than this (``sys.GetLocalListener``)."""


def state_dir(bundle: str, address: str) -> str:
    """The daemon's state directory, from the bundle path or the daemon's address."""
    bundle = os.path.abspath(bundle)
    ns_dir = os.path.dirname(bundle)
    plugin_dir = os.path.dirname(ns_dir)
    if os.path.basename(plugin_dir) == TASK_PLUGIN_DIR:
        return os.path.dirname(plugin_dir)
    path = address.removeprefix("unix://")
    if path.startswith("/"):
        return os.path.dirname(path)
    return os.path.dirname(ns_dir)


def socket_dir(state: str) -> str:
    """Directory of shim sockets, locks and logs under ``state``."""
    return os.path.join(state, "s")


def group_key(address: str, namespace: str, group: str) -> str:
    """The socket name of the shim serving ``group`` (hex SHA-256, as upstream)."""
    return str(sha256(f"{address}/{namespace}/{group}".encode()).hexdigest())


def socket_path(state: str, address: str, namespace: str, group: str) -> str:
    """The socket path of the shim serving ``group`` in ``namespace``.

    Raises:
        ValueError: the path is longer than a unix socket path may be.
    """
    path = os.path.join(socket_dir(state), group_key(address, namespace, group))
    if len(path) > SOCKET_PATH_MAX:
        msg = f"unix socket path too long (> {SOCKET_PATH_MAX}): {path}"
        raise ValueError(msg)
    return path


def runc_root(state: str, namespace: str) -> str:
    """Runc's ``--root`` for tasks of ``namespace`` (upstream: ``/run/containerd/runc/<ns>``)."""
    return os.path.join(state, "runc", namespace)
