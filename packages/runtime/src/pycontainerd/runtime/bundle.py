"""Task bundles: the directory a shim and runc work in.

A bundle lives at ``<state>/io.containerd.runtime.v2.task/<ns>/<id>`` (0700,
parents 0711) and holds the OCI spec ``config.json``, the ``rootfs/`` mount
point (0711), a ``work`` link to ``<root>/io.containerd.runtime.v2.task/<ns>/<id>``
(0711, for runtime data that must survive a reboot's tmpfs wipe), the ``log``
FIFO the shim writes its log to, and the files the shim and the manager write:
``address`` (the shim's ttrpc address), ``shim-binary-path``, ``shim.pid``
(written by the manager when the shim does not) and, for
pycontainerd, ``exit-published`` once the task's exit reached the exchange
(so a restart never announces it twice).

User namespaces: when the spec maps gids, the bundle directory belongs to the
gid that container root maps to and has mode 0710 (as upstream), so runc,
working as the container's root inside the new user namespace, can still reach
``rootfs/`` and ``config.json``; the parents stay 0711.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from typing import TYPE_CHECKING, Final

from pycontainerd.core import identifiers
from pycontainerd.core.errdefs import AlreadyExistsError, InvalidArgumentError

if TYPE_CHECKING:
    from pathlib import Path

CONFIG: Final = "config.json"
ROOTFS: Final = "rootfs"
WORK: Final = "work"
ADDRESS: Final = "address"
SHIM_BINARY_PATH: Final = "shim-binary-path"
SHIM_PID: Final = "shim.pid"
LOG: Final = "log"
EXIT_PUBLISHED: Final = "exit-published"


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers never see a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def remapped_root_gid(spec: bytes) -> int:
    """The host gid of container gid 0 in ``spec``'s ``linux.gidMappings`` (0: none).

    Raises:
        InvalidArgumentError: ``spec`` is not JSON.
    """
    try:
        doc = json.loads(spec)
    except ValueError as exc:
        msg = f"invalid OCI spec: {exc}"
        raise InvalidArgumentError(msg) from exc
    linux = doc.get("linux") if isinstance(doc, dict) else None
    mappings = linux.get("gidMappings") if isinstance(linux, dict) else None
    for m in mappings if isinstance(mappings, list) else ():
        if isinstance(m, dict) and m.get("containerID", 0) == 0:
            host = m.get("hostID", 0)
            return host if isinstance(host, int) and host > 0 else 0
    return 0


class Bundle:
    """One task's bundle directory and its work directory.

    Args:
        state_dir: the plugin's state dir (``<state>/io.containerd.runtime.v2.task``).
        root_dir: the plugin's root dir (``<root>/io.containerd.runtime.v2.task``).
        namespace: the task's namespace.
        task_id: the task (container) id.
    """

    def __init__(self, state_dir: Path, root_dir: Path, namespace: str, task_id: str) -> None:
        self.namespace = namespace
        self.id = task_id
        self.path = state_dir / namespace / task_id
        self.work_path = root_dir / namespace / task_id

    @classmethod
    def create(
        cls, state_dir: Path, root_dir: Path, namespace: str, task_id: str, spec: bytes
    ) -> Bundle:
        """Make a new bundle with ``spec`` as its ``config.json``.

        Raises:
            InvalidArgumentError: ``task_id`` is not a valid identifier
                (``invalid task id <id>: ...``).
            AlreadyExistsError: a bundle of that id exists in the namespace.
        """
        try:
            identifiers.validate(task_id)
        except InvalidArgumentError as exc:
            msg = f"invalid task id {task_id}: {exc.message}"
            raise InvalidArgumentError(msg) from exc
        b = cls(state_dir, root_dir, namespace, task_id)
        for parent in (b.path.parent, b.work_path.parent):
            parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        try:
            b.path.mkdir(mode=0o700)
        except FileExistsError:
            msg = f"bundle {b.path}"
            raise AlreadyExistsError(msg) from None
        try:
            gid = remapped_root_gid(spec)
            if gid:
                os.chown(b.path, -1, gid)
                b.path.chmod(0o710)
            (b.path / ROOTFS).mkdir(mode=0o711)
            shutil.rmtree(b.work_path, ignore_errors=True)
            b.work_path.mkdir(mode=0o711)
            (b.path / WORK).symlink_to(b.work_path)
            write_atomic(b.path / CONFIG, spec, 0o644)
            os.mkfifo(b.path / LOG, 0o700)
        except BaseException:
            b.delete()
            raise
        return b

    @property
    def config_path(self) -> Path:
        """``config.json``."""
        return self.path / CONFIG

    @property
    def log_path(self) -> Path:
        """The shim's log FIFO."""
        return self.path / LOG

    def read(self, name: str) -> str:
        """A small file of the bundle, stripped ("" when it is missing)."""
        try:
            return (self.path / name).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return ""

    def write(self, name: str, value: str, mode: int = 0o600) -> None:
        """Write a small file of the bundle atomically."""
        write_atomic(self.path / name, value.encode(), mode)

    @property
    def exit_published(self) -> bool:
        """Whether the task's exit event has already reached the exchange."""
        return (self.path / EXIT_PUBLISHED).exists()

    def mark_exit_published(self) -> None:
        """Remember that the task's exit event was published (ignored if the bundle is gone)."""
        with contextlib.suppress(OSError):
            self.write(EXIT_PUBLISHED, "1")

    def delete(self) -> None:
        """Remove the bundle and its work directory; a missing one is fine.

        The rootfs must already be unmounted (the shim does that); a rootfs
        that is still a mount point is left alone rather than emptied.
        """
        rootfs = self.path / ROOTFS
        if rootfs.is_dir() and os.path.ismount(rootfs):
            msg = f"rootfs of task {self.id} is still mounted"
            raise OSError(msg)
        shutil.rmtree(self.work_path, ignore_errors=True)
        shutil.rmtree(self.path, ignore_errors=True)
