"""Resolving archive paths inside a root directory, as containerd's applier does.

containerd cleans an entry's name lexically (so ``../x`` and ``/../x`` name
``x``), then resolves its parent directory *inside the root*, following
symbolic links as if the root were ``/``: an absolute target starts again at
the root, and ``..`` never climbs above it. The final component is never
followed. So a layer writing ``var/run/x`` over ``var/run -> /run`` writes
``<root>/run/x``, and nothing can reach outside the root.

:class:`Root` does this one component at a time with ``openat``-style calls
on directory file descriptors (``O_NOFOLLOW`` on every open), which also
holds when the tree changes between entries (a directory swapped for a
symbolic link is resolved again, inside the root). Paths of any length and
depth work: no call gets more than one component.

Importing this module must not import grpc.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.snapshots.fsutil import DIR_FLAGS

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_LINKS", "BreakoutError", "Root", "clean_name"]

#: symbolic links followed while resolving one path (containerd's limit)
MAX_LINKS: Final = 255


class BreakoutError(InvalidArgumentError):
    """An archive entry cannot be resolved inside the target directory."""


def clean_name(name: str) -> str:
    """The entry's path relative to the root, cleaned lexically (``""`` for the root itself)."""
    if (
        name
        and name[0] not in "/."
        and name[-1] not in "/."
        and "//" not in name
        and "/." not in name
    ):
        return name  # nothing for normpath to do: most names of a layer
    return posixpath.normpath("/" + name).lstrip("/")


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in {"", "."}]


class Root:
    """The target directory, with containerd's resolution of paths inside it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, DIR_FLAGS)
        #: called as ``on_mkdir(parent_fd, name, rel)`` after a missing directory is made
        self.on_mkdir: Callable[[int, str, str], None] | None = None

    def close(self) -> None:
        os.close(self.fd)

    def release(self, fd: int) -> None:
        """Close ``fd`` unless it is the root's own."""
        if fd != self.fd:
            os.close(fd)

    def child_dir(
        self, fd: int, resolved: str | list[str], name: str, *, create: bool
    ) -> int | None:
        """Open (or make) the plain directory ``name`` in ``fd`` without following anything.

        ``None`` when ``name`` is a symbolic link (resolve it from the root).
        """
        try:
            return os.open(name, DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as exc:
            if exc.errno in {errno.ELOOP, errno.ENOTDIR}:
                return None
            raise
        try:
            os.mkdir(name, 0o755, dir_fd=fd)
        except FileExistsError:
            return None
        if self.on_mkdir is not None:
            parent = resolved if isinstance(resolved, str) else "/".join(resolved)
            self.on_mkdir(fd, name, f"{parent}/{name}" if parent else name)
        return os.open(name, DIR_FLAGS, dir_fd=fd)

    def open_dir(self, rel: str, *, entry: str, create: bool) -> tuple[int, str]:
        """Open directory ``rel``: ``(fd, its path relative to the root after resolution)``.

        Missing directories are made (mode 0755, then ``on_mkdir``) when
        ``create``, else ``FileNotFoundError`` is raised.

        Raises:
            InvalidArgumentError: a component is not a directory, or too many links.
        """
        cur = self.fd
        names: list[str] = []  # the resolved path of ``cur``, by components
        pending = _components(rel)
        pending.reverse()
        links = 0
        try:
            while pending:
                comp = pending.pop()
                if comp == "..":
                    if names:
                        names.pop()
                        parent = os.open("..", DIR_FLAGS, dir_fd=cur)
                        self.release(cur)
                        cur = parent
                    continue
                try:
                    st = os.lstat(comp, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    st = None
                if st is not None and stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_LINKS:
                        msg = f"cannot extract {entry!r}: too many levels of symbolic links"
                        raise BreakoutError(msg)
                    target = os.readlink(comp, dir_fd=cur)
                    if target.startswith("/"):
                        self.release(cur)
                        cur, names = self.fd, []
                    pending.extend(reversed(_components(target)))
                    continue
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    msg = f"cannot extract {entry!r}: parent {comp!r} is not a directory"
                    raise InvalidArgumentError(msg)
                child = self.child_dir(cur, names, comp, create=create)
                if child is None:  # it changed under us: look at it again
                    pending.append(comp)
                    continue
                self.release(cur)
                cur = child
                names.append(comp)
        except BaseException:
            self.release(cur)
            raise
        return cur, "/".join(names)
