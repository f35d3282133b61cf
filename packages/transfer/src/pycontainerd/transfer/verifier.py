"""Image verifiers: executables that judge an image before a Transfer pull fetches it.

containerd 2.x's ``io.containerd.image-verifier.v1.bindir`` plugin, with its
configuration and its caller contract:

- every entry of ``bin_dir``, in name order, is run as
  ``<bin> -name <reference> -digest <digest> -stdin-media-type
  application/vnd.oci.descriptor.v1+json`` with the image's descriptor as JSON
  on its standard input;
- exit status 0 allows the pull, anything else blocks it; the first 32 KiB of
  standard output is the reason, standard error goes to the debug log;
- a directory that does not exist, or is empty, allows every pull;
- only the first ``max_verifiers`` entries run (a negative value: all of them);
- a verifier that outlives ``per_verifier_timeout`` is killed with its whole
  process group, and the pull fails with an error rather than a judgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pycontainerd.core.types import Descriptor

__all__ = [
    "BinDirVerifier",
    "ImageVerifier",
    "Judgement",
    "VerifierError",
]

log = logging.getLogger(__name__)

DESCRIPTOR_MEDIA_TYPE = "application/vnd.oci.descriptor.v1+json"
OUTPUT_LIMIT = 32 * 1024


@dataclass(frozen=True, slots=True)
class Judgement:
    """A verifier's answer: ``ok`` allows the pull; ``reason`` says why."""

    ok: bool
    reason: str


@runtime_checkable
class ImageVerifier(Protocol):
    """What an ``io.containerd.image-verifier.v1`` plugin's instance provides."""

    async def verify_image(self, name: str, desc: Descriptor) -> Judgement:
        """Judge the image ``name`` whose root descriptor is ``desc``."""
        ...


class VerifierError(Exception):
    """A verifier gave no judgement: it could not be run, was killed or timed out."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    exit_code: int
    reason: str


class BinDirVerifier:
    """Runs the executables of one directory (see the module's contract)."""

    def __init__(self, bin_dir: str, max_verifiers: int = 10, timeout: float = 10.0) -> None:
        self.bin_dir = bin_dir
        self.max_verifiers = max_verifiers
        self.timeout = timeout

    async def verify_image(self, name: str, desc: Descriptor) -> Judgement:
        """Judge the image ``name`` whose root descriptor is ``desc``.

        Raises:
            VerifierError: the directory cannot be read, or a verifier could not
                be run to its end within the timeout.
        """
        try:
            entries = sorted(os.listdir(self.bin_dir))
        except FileNotFoundError:
            return Judgement(True, f"image verifier directory {self.bin_dir} does not exist")
        except OSError as exc:
            msg = f"failed to list directory contents: {exc.strerror or exc}"
            raise VerifierError(msg) from None
        if not entries:
            return Judgement(True, f"no image verifier binaries found in {self.bin_dir}")
        if 0 <= self.max_verifiers < len(entries):
            log.warning(
                "image verifiers are being skipped since directory %s has %d entries, "
                "more than configured max of %d verifiers",
                self.bin_dir,
                len(entries),
                self.max_verifiers,
            )
            entries = entries[: self.max_verifiers]
        reasons = []
        for entry in entries:
            start = time.monotonic()
            try:
                outcome = await self._run(entry, name, desc)
            except VerifierError as exc:
                took = time.monotonic() - start
                msg = f"failed to call verifier {entry} (runtime {took:.3f}s): {exc}"
                raise VerifierError(msg) from None
            if outcome.exit_code != 0:
                reason = (
                    f"verifier {entry} rejected image (exit code {outcome.exit_code}): "
                    f"{outcome.reason}"
                )
                return Judgement(False, reason)
            reasons.append(f"{entry} => {outcome.reason}")
        return Judgement(True, ", ".join(reasons))

    async def _run(self, entry: str, name: str, desc: Descriptor) -> _Outcome:
        from pycontainerd.remotes.archive.importer import descriptor_json

        path = os.path.join(self.bin_dir, entry)
        args = ("-name", name, "-digest", desc.digest, "-stdin-media-type", DESCRIPTOR_MEDIA_TYPE)
        try:
            proc = await asyncio.create_subprocess_exec(
                path,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                process_group=0,  # a timeout kills the verifier and all it started
            )
        except OSError as exc:
            msg = f"starting process: {path}: {exc.strerror or exc}"
            raise VerifierError(msg) from None
        if proc.stdin is None or proc.stdout is None or proc.stderr is None:  # pragma: no cover
            msg = "starting process: no pipes"  # all three were asked for above
            raise VerifierError(msg)
        payload = (json.dumps(descriptor_json(desc), separators=(",", ":")) + "\n").encode()
        feeder = asyncio.create_task(_feed(proc.stdin, payload))
        stderr = asyncio.create_task(_log_stderr(proc.stderr, entry))
        try:
            async with asyncio.timeout(self.timeout):
                reason = await _read_reason(proc.stdout)
                await stderr
                code = await proc.wait()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            msg = "waiting on command to exit: signal: killed"
            raise VerifierError(msg) from None
        finally:
            for task in (feeder, stderr):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if proc.returncode is None:  # cancelled from outside: leave nothing running
                _kill_group(proc.pid)
                await proc.wait()
        if code < 0:
            msg = f"waiting on command to exit: signal: {signal.Signals(-code).name}"
            raise VerifierError(msg)
        return _Outcome(code, reason)


async def _feed(stdin: asyncio.StreamWriter, payload: bytes) -> None:
    """Write the descriptor; a verifier that does not read it is its own business."""
    try:
        stdin.write(payload)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        log.warning("failed to completely write descriptor to stdin")
    finally:
        stdin.close()


async def _read_reason(stdout: asyncio.StreamReader) -> str:
    """The first 32 KiB of standard output, trimmed; the rest is read and dropped."""
    data = b""
    while len(data) < OUTPUT_LIMIT and (chunk := await stdout.read(OUTPUT_LIMIT - len(data))):
        data += chunk
    reason = data.decode("utf-8", "replace").strip()
    if await stdout.read(1):
        reason += "(stdout truncated)"
        while await stdout.read(65536):
            pass
    return reason


async def _log_stderr(stderr: asyncio.StreamReader, entry: str) -> None:
    """Standard error at debug level, up to 32 KiB; the rest is read and dropped."""
    logged = 0
    while chunk := await stderr.read(65536):
        if logged < OUTPUT_LIMIT:
            text = chunk[: OUTPUT_LIMIT - logged].decode("utf-8", "replace")
            for line in text.splitlines():
                log.debug("image verifier %s: %s", entry, line)
            logged += len(chunk)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
