"""Mounting snapshot mounts with ``mount(2)``/``umount2(2)`` (containerd's ``mount`` package).

A snapshotter describes a filesystem as a list of :class:`~pycontainerd.core.types.Mount`
values (``type``, ``source``, ``options`` in ``mount(8)`` syntax). This module
turns the options into mount flags plus a data string and calls the system
calls directly through ``ctypes``; nothing is shelled out. :func:`mount` and
:func:`mount_all` live in :mod:`pycontainerd.core.mount` (the shim mounts a
task's rootfs with them too) and are re-exported here.

Long overlay option strings are a real limit: the kernel copies at most one
page of mount data. A 128-layer chain of ``<root>/snapshots/<id>/fs``
lowerdirs does not fit, so :func:`mount` shortens them before the call. It
opens the directory the layers have in common once (``O_PATH``) and names each
layer relative to ``/proc/self/fd/<n>``, which the kernel resolves at mount
time. Unlike containerd's trick (``chdir`` in a forked child), this is safe in
a threaded process.

Temporary mounts (for applying or diffing layers) live under a directory the
daemon sets with :func:`set_temp_location` (``<root>/tmpmounts``); anything
left there by a crash is unmounted and removed by :func:`clean_temp_mounts`.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pycontainerd.core.errdefs import UnavailableError
from pycontainerd.core.mount import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    PAGE_SIZE,
    UMOUNT_NOFOLLOW,
    MountOptions,
    mount,
    mount_all,
    parse_options,
    sys_umount,
)
from pycontainerd.core.types import Mount

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable, Sequence

__all__ = [
    "MNT_DETACH",
    "MS_BIND",
    "MS_NODEV",
    "MS_NOEXEC",
    "MS_NOSUID",
    "MS_PRIVATE",
    "MS_RDONLY",
    "MS_REC",
    "MS_REMOUNT",
    "PAGE_SIZE",
    "UMOUNT_NOFOLLOW",
    "MountOptions",
    "clean_temp_mounts",
    "mount",
    "mount_all",
    "parse_options",
    "read_only",
    "set_temp_location",
    "temp_location",
    "unmount",
    "unmount_all",
    "with_temp_mounts",
]

log = logging.getLogger(__name__)


def unmount(target: str | os.PathLike[str], flags: int = 0, *, retries: int = 50) -> None:
    """Unmount ``target``, retrying a little while it is busy.

    Raises:
        UnavailableError: still busy after the retries.
        OSError: any other failure (``EINVAL`` when nothing is mounted there).
    """
    path = os.fspath(target)
    for attempt in range(retries):
        try:
            sys_umount(path, flags | UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            if attempt == retries - 1:
                msg = f"unmount {path!r}: device or resource busy"
                raise UnavailableError(msg) from exc
            time.sleep(0.05)
        else:
            return


def unmount_all(target: str | os.PathLike[str], flags: int = 0) -> None:
    """Unmount every mount stacked on ``target``; nothing mounted is fine."""
    for _ in range(1024):
        try:
            unmount(target, flags)
        except OSError as exc:
            if exc.errno in {errno.EINVAL, errno.ENOENT}:
                return
            raise
    msg = f"too many mounts stacked on {os.fspath(target)!r}"
    raise UnavailableError(msg)


def read_only(mounts: Iterable[Mount]) -> list[Mount]:
    """The same mounts, read-only (containerd's ``mount.ReadOnly`` for diffing).

    An overlay with an upper directory becomes a lower-only overlay (the upper
    directory becomes the top lower), bind mounts gain ``ro``.
    """
    out: list[Mount] = []
    for m in mounts:
        if m.type == "overlay":
            upper = ""
            lowers = ""
            rest: list[str] = []
            for option in m.options:
                if option.startswith("upperdir="):
                    upper = option.removeprefix("upperdir=")
                elif option.startswith("lowerdir="):
                    lowers = option.removeprefix("lowerdir=")
                elif option.startswith("workdir=") or option == "rw":
                    continue
                else:
                    rest.append(option)
            if upper:
                lowers = f"{upper}:{lowers}" if lowers else upper
            out.append(
                Mount(
                    type="overlay",
                    source=m.source,
                    target=m.target,
                    options=(*rest, f"lowerdir={lowers}"),
                )
            )
        else:
            options = tuple(o for o in m.options if o != "rw")
            if "ro" not in options:
                options = (*options, "ro")
            out.append(Mount(type=m.type, source=m.source, target=m.target, options=options))
    return out


_temp_location: Path | None = None


def set_temp_location(location: str | os.PathLike[str]) -> None:
    """Make ``location`` (``<root>/tmpmounts``) the home of temporary mounts."""
    global _temp_location  # noqa: PLW0603 - process-wide, set by the daemon at start
    _temp_location = Path(location)


def temp_location() -> Path:
    """Where temporary mounts go (the system temporary directory by default)."""
    return _temp_location if _temp_location is not None else Path(tempfile.gettempdir())


def clean_temp_mounts(location: str | os.PathLike[str]) -> list[str]:
    """Unmount and remove whatever a previous run left under ``location``.

    Returns:
        The directories that were cleaned.
    """
    root = Path(location)
    root.mkdir(parents=True, exist_ok=True)
    cleaned: list[str] = []
    for entry in sorted(root.iterdir()):
        try:
            unmount_all(entry, MNT_DETACH)
            entry.rmdir()
        except OSError as exc:
            log.warning("cannot clean temporary mount %s: %s", entry, exc)
            continue
        cleaned.append(str(entry))
    return cleaned


@contextlib.asynccontextmanager
async def with_temp_mounts(
    mounts: Sequence[Mount], *, location: str | os.PathLike[str] | None = None
) -> AsyncIterator[Path]:
    """Mount ``mounts`` on a fresh directory for the ``async with`` block.

    Yields:
        The directory the mounts are stacked on. It is unmounted and removed on
        exit, also when the block raises.
    """
    base = Path(location) if location is not None else temp_location()
    base.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="containerd-mount", dir=base))
    try:
        await asyncio.to_thread(mount_all, mounts, target)
    except BaseException:
        await asyncio.to_thread(target.rmdir)
        raise
    try:
        yield target
    finally:
        await asyncio.to_thread(_release, target, len(mounts))


def _release(target: Path, count: int) -> None:
    for _ in range(count):
        try:
            unmount(target)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                break
            raise
    target.rmdir()
