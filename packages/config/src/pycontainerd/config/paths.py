"""Where pycontainerd keeps its files by default, as root and as an ordinary user.

As root the defaults never collide with a system containerd:
``/var/lib/pycontainerd``, ``/run/pycontainerd`` and the socket
``/run/pycontainerd/containerd.sock``; the config file is
``/etc/pycontainerd/config.toml``. As an ordinary user they are platformdirs'
user data, runtime and config directories for ``pycontainerd``.

Every function takes ``rootless``: ``True``/``False`` to choose explicitly,
``None`` to decide from the effective user id.

Kept tiny on purpose: ``ctr --help`` imports it through
``pycontainerd.config.client``. platformdirs costs tens of milliseconds to
import, so it is imported only when a rootless default is asked for.
Importing this module must not import grpc.
"""

from __future__ import annotations

import os
from typing import Final

APP_NAME: Final = "pycontainerd"
SOCKET_NAME: Final = "containerd.sock"
CONFIG_NAME: Final = "config.toml"

SYSTEM_ROOT: Final = "/var/lib/pycontainerd"
SYSTEM_STATE: Final = "/run/pycontainerd"
SYSTEM_CONFIG_DIR: Final = "/etc/pycontainerd"


def is_rootless(rootless: bool | None = None) -> bool:
    """Resolve ``rootless``: ``None`` means "not running as uid 0"."""
    if rootless is None:
        return os.geteuid() != 0
    return rootless


def default_root(rootless: bool | None = None) -> str:
    """The persistent data directory (containerd's ``root``)."""
    if not is_rootless(rootless):
        return SYSTEM_ROOT
    import platformdirs

    return platformdirs.user_data_dir(APP_NAME, appauthor=False)


def default_state(rootless: bool | None = None) -> str:
    """The runtime state directory (containerd's ``state``): sockets, bundles."""
    if not is_rootless(rootless):
        return SYSTEM_STATE
    import warnings

    import platformdirs

    with warnings.catch_warnings():
        # Without XDG_RUNTIME_DIR platformdirs falls back to a private
        # directory under /tmp and warns; that fallback is what we want.
        warnings.simplefilter("ignore", platformdirs.RuntimeDirWarning)
        return platformdirs.user_runtime_dir(APP_NAME, appauthor=False)


def default_address(rootless: bool | None = None) -> str:
    """The gRPC unix socket path: ``<state>/containerd.sock``."""
    return os.path.join(default_state(rootless), SOCKET_NAME)


def default_config_path(rootless: bool | None = None) -> str:
    """Where the daemon looks for its config file when none is named."""
    if not is_rootless(rootless):
        return os.path.join(SYSTEM_CONFIG_DIR, CONFIG_NAME)
    import platformdirs

    return os.path.join(platformdirs.user_config_dir(APP_NAME, appauthor=False), CONFIG_NAME)
