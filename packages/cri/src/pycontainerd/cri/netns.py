"""Pod network namespaces, created new and pinned by a bind mount of a file.

The namespace lives as long as the bind mount at its path, independently of
any process in it, so CNI can set it up before the pause container starts
and tear it down after the pause container is gone. util-linux ``unshare``
creates and pins it in one step (``--net=<file>``); removal detaches the
mount and deletes the file.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from typing import TYPE_CHECKING

from pycontainerd.cri.files import libc

if TYPE_CHECKING:
    from pathlib import Path

MNT_DETACH = 2
UNSHARE = "unshare"


class NetnsError(Exception):
    """A namespace could not be created or removed."""


async def create(path: Path) -> Path:
    """Create a new network namespace pinned at ``path`` (which must not exist).

    Raises:
        NetnsError: ``unshare`` failed (the file is removed again).
    """
    await asyncio.to_thread(_new_file, path)
    proc = await asyncio.create_subprocess_exec(
        UNSHARE,
        f"--net={path}",
        "true",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
        msg = f"failed to create network namespace: {err.decode(errors='replace').strip()}"
        raise NetnsError(msg)
    return path


def _new_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(exist_ok=False)


def is_pinned(path: Path) -> bool:
    """Whether ``path`` is a mounted namespace file (not just a leftover file)."""
    try:
        return os.stat(path).st_dev != os.stat(path.parent).st_dev
    except OSError:
        return False


def remove(path: Path) -> None:
    """Unmount and delete a pinned namespace; a missing one is fine.

    Raises:
        NetnsError: the unmount failed for another reason than "not mounted".
    """
    if not path.exists():
        return
    if libc().umount2(os.fsencode(path), MNT_DETACH) != 0:
        errno = ctypes.get_errno()
        if errno not in (22, 2):  # EINVAL: not a mount point; ENOENT
            msg = f"failed to unmount network namespace {path.name}: {os.strerror(errno)}"
            raise NetnsError(msg)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
