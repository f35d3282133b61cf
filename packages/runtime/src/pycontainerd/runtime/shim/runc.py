"""Driving ``runc``: each call is a child the reaper watches.

Calls run as ``runc --root <root> --log <bundle>/log.json --log-format json
<command> ...``. runc's own error goes to that JSON log (and to stderr); a
failed call raises with the last error line, mapped to an errdefs kind the
way upstream's shim maps runc's texts (``does not exist`` → NotFound,
``already exists`` → AlreadyExists, ``not running``/``not paused`` →
FailedPrecondition).

The task service reports ``create``/``start``/``exec`` failures as Unknown
(``OCI runtime <op> failed: ...``) and ``kill`` failures through
:func:`kill_error`, as upstream's shim does. A runc binary that cannot be
executed fails with Go's ``os/exec`` text (clients match ``exec: "<name>":
executable file not found in $PATH``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    FailedPreconditionError,
    NotFoundError,
    UnknownError,
)
from pycontainerd.runtime.shim.reaper import Reaper, spawn
from pycontainerd.runtime.shim.wire import RUNC_OPTIONS

if TYPE_CHECKING:
    from google.protobuf import any_pb2

__all__ = ["Runc", "RuncError", "RuncOptions", "kill_error"]


class RuncError(UnknownError):
    """runc failed in a way without a more specific kind."""


def _classify(text: str) -> ContainerdError:
    lowered = text.lower()
    if "does not exist" in lowered or "not found" in lowered:
        return NotFoundError(text)
    if "already exists" in lowered:
        return AlreadyExistsError(text)
    if (
        "not running" in lowered
        or "not paused" in lowered
        or ("cannot" in lowered and "state" in lowered)
    ):
        return FailedPreconditionError(text)
    return RuncError(text)


def kill_error(exc: ContainerdError) -> ContainerdError:
    """A failed ``runc kill`` as upstream's shim reports it.

    Gone processes and containers are NotFound (``process already finished`` for
    "not running" / "no such process", ``no such container`` for "does not
    exist"); anything else is Unknown (``unknown error after kill: ...``).
    """
    text = exc.message
    if (
        "process already finished" in text
        or "container not running" in text
        or "no such process" in text.lower()
    ):
        return NotFoundError("process already finished")
    if "does not exist" in text:
        return NotFoundError("no such container")
    return UnknownError(f"unknown error after kill: {text}")


def _exec_error(binary: str, exc: OSError) -> str:
    """Go's ``os/exec`` text for a runc binary that could not be started."""
    if "/" not in binary and isinstance(exc, FileNotFoundError):
        return f'exec: "{binary}": executable file not found in $PATH'
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return f"fork/exec {binary}: {reason.lower()}"


async def _read_all(fd: int) -> bytes:
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            chunks.append(data)
            return
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class RuncOptions:
    """The ``containerd.runc.v1.Options`` a task is created with, as this shim honours them.

    ``root``, ``binary_name`` and ``systemd_cgroup`` go to every runc call
    (``--root``, the binary, ``--systemd-cgroup``); ``no_pivot_root`` and
    ``no_new_keyring`` to ``runc create`` (``--no-pivot``, ``--no-new-keyring``);
    ``io_uid``/``io_gid`` own the stdio pipes of the task's processes (runc
    itself gives them to the process's uid; the group, and the owner seen
    from a user namespace, are the option's). ``shim_cgroup`` is
    applied when the shim starts (see :mod:`.bootstrap`). The CRIU fields are
    unused: this shim does not checkpoint.
    """

    root: str
    binary_name: str = "runc"
    systemd_cgroup: bool = False
    no_pivot_root: bool = False
    no_new_keyring: bool = False
    io_uid: int = 0
    io_gid: int = 0

    @classmethod
    def parse(cls, options: any_pb2.Any | None, default_root: str) -> RuncOptions:
        """The options in ``options`` (runc's defaults when it holds none)."""
        if options is None or not options.type_url.endswith(RUNC_OPTIONS):
            return cls(default_root)
        from pycontainerd.api.types.runc.options import oci_pb2

        opts = oci_pb2.Options()
        opts.ParseFromString(options.value)
        return cls(
            root=opts.root or default_root,
            binary_name=opts.binary_name or "runc",
            systemd_cgroup=opts.systemd_cgroup,
            no_pivot_root=opts.no_pivot_root,
            no_new_keyring=opts.no_new_keyring,
            io_uid=opts.io_uid,
            io_gid=opts.io_gid,
        )

    def create_flags(self) -> list[str]:
        """Extra flags of ``runc create``."""
        return [
            *(["--no-pivot"] if self.no_pivot_root else []),
            *(["--no-new-keyring"] if self.no_new_keyring else []),
        ]

    def io_owner(self) -> tuple[int, int] | None:
        """Owner for the stdio pipes (None: leave them the shim's)."""
        return (self.io_uid, self.io_gid) if self.io_uid or self.io_gid else None


@dataclass(slots=True)
class Runc:
    """One runc configuration (binary, root); methods are runc subcommands."""

    reaper: Reaper
    root: str
    binary: str = "runc"
    log: str = ""
    systemd_cgroup: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)

    def _argv(self, *args: str) -> list[str]:
        argv = [self.binary, "--root", self.root]
        if self.log:
            argv += ["--log", self.log, "--log-format", "json"]
        if self.systemd_cgroup:
            argv.append("--systemd-cgroup")
        return [*argv, *args]

    def _spawn_error(self, exc: OSError) -> RuncError:
        """The runc binary could not be started: Go's text, as upstream's shim reports it."""
        text = _exec_error(self.binary, exc)
        if self.log and not os.path.exists(self.log):
            # Upstream reads runc's log for the reason first; runc never wrote one.
            text = (
                f"unable to retrieve OCI runtime error (open {self.log}: "
                f"no such file or directory): {text}"
            )
        return RuncError(text)

    def _log_size(self) -> int:
        try:
            return os.stat(self.log).st_size if self.log else 0
        except OSError:
            return 0

    def _error_text(self, stderr: bytes, offset: int) -> str:
        text = stderr.decode(errors="replace").strip()
        if text:
            return text.splitlines()[-1]
        lines: list[str] = []
        if self.log:
            with contextlib.suppress(OSError), open(self.log, "rb") as f:
                f.seek(offset)
                for raw in f.read().splitlines():
                    with contextlib.suppress(ValueError):
                        entry = json.loads(raw)
                        if isinstance(entry, dict) and entry.get("level") == "error":
                            lines.append(str(entry.get("msg", "")))
        return lines[-1] if lines else "runc failed"

    async def run(
        self,
        *args: str,
        stdio: tuple[int | None, int | None, int | None] | None = None,
    ) -> bytes:
        """Run ``runc <args>``; return its stdout.

        With ``stdio`` (for ``create``/``exec``: the container's fds, None for
        ``/dev/null``) nothing is captured, because the container inherits
        those fds and they stay open as long as it runs.

        Raises:
            ContainerdError: runc exited non-zero (kind from its error text).
        """
        argv = self._argv(*args)
        offset = self._log_size()
        if stdio is not None:
            try:
                _, exited = spawn(
                    self.reaper, argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2]
                )
            except OSError as exc:
                raise self._spawn_error(exc) from exc
            ex = await exited
            if ex.status != 0:
                raise _classify(self._error_text(b"", offset))
            return b""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            _, exited = spawn(self.reaper, argv, stdout=out_w, stderr=err_w)
        except BaseException as exc:
            for fd in (out_r, err_r):
                os.close(fd)
            if isinstance(exc, OSError):
                raise self._spawn_error(exc) from exc
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        ex, out, err = await asyncio.gather(exited, _read_all(out_r), _read_all(err_r))
        if ex.status != 0:
            raise _classify(self._error_text(err, offset))
        return out

    async def state(self, container_id: str) -> dict[str, object]:
        """``runc state``: the container's state document."""
        data = json.loads(await self.run("state", container_id) or b"{}")
        return data if isinstance(data, dict) else {}

    async def ps(self, container_id: str) -> list[int]:
        """``runc ps --format json``: pids of the container's processes."""
        data = json.loads(await self.run("ps", "--format", "json", container_id) or b"[]")
        return [int(p) for p in data] if isinstance(data, list) else []
