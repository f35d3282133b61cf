"""Driving ``runc``: each call is a child the reaper watches.

Calls run as ``runc --root <root> --log <bundle>/log.json --log-format json
<command> ...``. runc's own error goes to that JSON log (and to stderr); a
failed call raises with the last error line, mapped to an errdefs kind the
way upstream's shim maps runc's texts (``does not exist`` → NotFound,
``already exists`` → AlreadyExists, ``not running``/``not paused`` →
FailedPrecondition).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field

from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    FailedPreconditionError,
    NotFoundError,
    UnknownError,
)
from pycontainerd.runtime.shim.reaper import Reaper, spawn

__all__ = ["Runc", "RuncError"]


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


@dataclass(slots=True)
class Runc:
    """One runc configuration (binary, root); methods are runc subcommands."""

    reaper: Reaper
    root: str
    binary: str = "runc"
    log: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def _argv(self, *args: str) -> list[str]:
        argv = [self.binary, "--root", self.root]
        if self.log:
            argv += ["--log", self.log, "--log-format", "json"]
        return [*argv, *args]

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
            _, exited = spawn(self.reaper, argv, stdin=stdio[0], stdout=stdio[1], stderr=stdio[2])
            ex = await exited
            if ex.status != 0:
                raise _classify(self._error_text(b"", offset))
            return b""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            _, exited = spawn(self.reaper, argv, stdout=out_w, stderr=err_w)
        except BaseException:
            for fd in (out_r, err_r):
                os.close(fd)
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
