"""A pod's ``hostname``, ``hosts`` and ``resolv.conf``, for its containers to mount.

Kept in the sandbox's directory under the plugin's root, as containerd does:
``resolv.conf`` from the pod's DNSConfig (``search``, ``nameserver`` and
``options`` lines) or a copy of the host's when the pod sets none; ``hosts``
with the loopback entries (the host's copy for hostNetwork pods); ``hostname``
with the pod's hostname (the host's when a hostNetwork pod sets none).
The pod's ``/dev/shm`` is a tmpfs mounted at ``shm`` there, shared by the pause
container and every container of the pod (unless the pod uses the host's IPC).

Importing this module must not import grpc.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
from pathlib import Path
from typing import Any

HOST_RESOLV = Path("/etc/resolv.conf")
HOST_HOSTS = Path("/etc/hosts")
DEFAULT_HOSTS = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "ff00::0\tip6-mcastprefix\n"
    "ff02::1\tip6-allnodes\n"
    "ff02::2\tip6-allrouters\n"
)


def resolv_conf(dns: dict[str, Any]) -> str | None:
    """The text of a resolv.conf for a DNSConfig (as a dict); None = use the host's."""
    servers = [str(s) for s in dns.get("servers") or []]
    searches = [str(s) for s in dns.get("searches") or []]
    options = [str(s) for s in dns.get("options") or []]
    if not (servers or searches or options):
        return None
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines.extend(f"nameserver {s}" for s in servers)
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def write_sandbox_files(
    directory: Path, *, hostname: str, dns: dict[str, Any], host_network: bool
) -> str:
    """Write the three files into ``directory`` (created); return the hostname used."""
    directory.mkdir(parents=True, exist_ok=True)
    if not hostname and host_network:
        hostname = socket.gethostname()
    (directory / "hostname").write_text(f"{hostname}\n")
    if host_network and HOST_HOSTS.is_file():
        shutil.copyfile(HOST_HOSTS, directory / "hosts")
    else:
        (directory / "hosts").write_text(DEFAULT_HOSTS)
    text = resolv_conf(dns)
    if text is None:
        if HOST_RESOLV.is_file():
            shutil.copyfile(HOST_RESOLV, directory / "resolv.conf")
        else:
            (directory / "resolv.conf").write_text("")
    else:
        (directory / "resolv.conf").write_text(text)
    return hostname


SHM_SIZE = 64 * 1024 * 1024
"""The size of a pod's ``/dev/shm`` (containerd's default, 64 MiB)."""
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 2, 4, 8
_MNT_DETACH = 2


@functools.cache
def libc() -> Any:
    """The C library, loaded once (``find_library`` runs ``ldconfig -p`` each time)."""
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def mount_shm(path: Path) -> None:
    """Mount the pod's shared ``/dev/shm``: a tmpfs at ``path`` (created).

    Raises:
        OSError: the mount failed.
    """
    import ctypes

    path.mkdir(parents=True, exist_ok=True)
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    data = f"mode=1777,size={SHM_SIZE}".encode()
    if libc().mount(b"shm", os.fsencode(path), b"tmpfs", flags, data) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mounting the pod's /dev/shm: {os.strerror(errno)}", str(path))


def unmount_shm(path: Path) -> None:
    """Unmount a pod's ``/dev/shm`` (lazily); not mounted or missing is fine."""
    if os.path.ismount(path):
        libc().umount2(os.fsencode(path), _MNT_DETACH)
