"""Client-side defaults: which socket and namespace to use, and how long to wait.

Resolution order, as in containerd's ``ctr``: the command-line flag, then the
environment (``CONTAINERD_ADDRESS``, ``CONTAINERD_NAMESPACE``), then the
default. The address may be a bare socket path or ``unix://<path>``.

Kept as light as possible: ``ctr --help`` imports it. It imports no grpc, no
TOML parser and, as root, not even platformdirs.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from pycontainerd.config import paths
from pycontainerd.config.duration import parse_duration
from pycontainerd.config.errors import ConfigValueError

if TYPE_CHECKING:
    from collections.abc import Mapping

ADDRESS_ENV: Final = "CONTAINERD_ADDRESS"
NAMESPACE_ENV: Final = "CONTAINERD_NAMESPACE"
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
"""Seconds to wait for the daemon's socket (the Go client's default)."""


def default_address(rootless: bool | None = None) -> str:
    """The daemon's default socket path for this user (see :mod:`.paths`)."""
    return paths.default_address(rootless)


def normalize_address(address: str) -> str:
    """Strip a ``unix://`` (or ``unix:``) scheme and return the socket path.

    Raises:
        ConfigValueError: The address is empty or has another scheme.
    """
    if address.startswith("unix://"):
        path = address[len("unix://") :]
    elif address.startswith("unix:"):
        path = address[len("unix:") :]
    else:
        scheme, sep, _ = address.partition("://")
        if sep:
            msg = f'unsupported address scheme "{scheme}" in "{address}": only unix sockets'
            raise ConfigValueError(msg)
        path = address
    if not path:
        raise ConfigValueError(f'address "{address}" names no socket path')
    return path


def resolve_address(
    flag: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    rootless: bool | None = None,
) -> str:
    """The socket path to dial: ``--address``, else ``CONTAINERD_ADDRESS``, else the default.

    Args:
        flag: The ``--address`` value, or ``None`` if not given.
        env: The environment (``os.environ`` when ``None``); an empty
            variable counts as unset.
        rootless: Which default socket to fall back to (``None``: by uid).

    Returns:
        A bare socket path (no scheme); see :func:`grpc_target`.

    Raises:
        ConfigValueError: The flag is empty or the address has a scheme
            other than ``unix``.
    """
    environ = os.environ if env is None else env
    if flag is not None:
        if not flag:
            raise ConfigValueError("address cannot be empty")
        return normalize_address(flag)
    from_env = environ.get(ADDRESS_ENV, "")
    if from_env:
        return normalize_address(from_env)
    return default_address(rootless)


def resolve_namespace(flag: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The namespace: ``--namespace``, else ``CONTAINERD_NAMESPACE``, else ``default``.

    The name itself is validated by whoever uses it (the daemon answers an
    invalid one with InvalidArgument).

    Raises:
        ConfigValueError: The flag is given but empty.
    """
    environ = os.environ if env is None else env
    if flag is not None:
        if not flag:
            raise ConfigValueError("namespace cannot be empty")
        return flag
    return environ.get(NAMESPACE_ENV, "") or DEFAULT_NAMESPACE


def resolve_connect_timeout(flag: str | float | None = None) -> float:
    """Seconds to wait for the connection: ``--connect-timeout`` or the default.

    ``flag`` may be seconds or a Go duration (``"5s"``); ``0`` or ``None``
    mean the default, as in ``ctr``.

    Raises:
        ConfigValueError: Not a duration, or negative.
    """
    if flag is None:
        return DEFAULT_CONNECT_TIMEOUT
    seconds = parse_duration(flag) if isinstance(flag, str) else float(flag)
    if seconds < 0:
        raise ConfigValueError(f"connect timeout cannot be negative: {flag}")
    return seconds or DEFAULT_CONNECT_TIMEOUT


def grpc_target(address: str) -> str:
    """The grpc channel target for a socket path (``unix:///abs`` or ``unix:rel``)."""
    path = normalize_address(address)
    return f"unix://{path}" if path.startswith("/") else f"unix:{path}"
