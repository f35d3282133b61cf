"""Runtime info for Introspection ``PluginInfo`` (containerd 2.x's ``TaskManager.PluginInfo``).

``PluginInfo(type="io.containerd.runtime.v2", id="task", options=RuntimeRequest)``
resolves ``runtime_path`` (a runtime name such as ``io.containerd.runc.v2``, or
an absolute shim path) to a shim binary, runs ``<shim> -info`` with the
request's marshalled runtime options on stdin and answers the
``containerd.types.RuntimeInfo`` the shim prints. Both the Go runc shim and
ours speak this protocol.

This module imports protobuf, never grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final, Protocol

from pycontainerd.core.errdefs import ContainerdError, UnimplementedError, UnknownError

__all__ = ["REQUEST_URL", "RESPONSE_URL", "ShimResolver", "plugin_info"]

REQUEST_URL: Final = "containerd.types.RuntimeRequest"
RESPONSE_URL: Final = "containerd.types.RuntimeInfo"
INFO_TIMEOUT: Final = 30.0


class ShimResolver(Protocol):
    """What ``-info`` needs of the task manager (``manager.TaskManager``): a shim and its env."""

    def resolve_binary(self, runtime: str, runtime_path: str = "") -> str: ...
    def shim_env(self, namespace: str) -> dict[str, str]: ...


async def plugin_info(manager: ShimResolver, type_url: str, value: bytes) -> tuple[str, bytes]:
    """The ``RuntimeInfo`` (type URL, marshalled) for a marshalled ``RuntimeRequest``.

    Raises:
        UnimplementedError: the options are not a ``RuntimeRequest``.
        ContainerdError: the runtime cannot be resolved, or its ``-info`` failed.
    """
    from pycontainerd.api.types import introspection_pb2

    if type_url.removeprefix("type.googleapis.com/") != REQUEST_URL:
        msg = f"unknown request type {type_url}"
        raise UnimplementedError(msg)
    req = introspection_pb2.RuntimeRequest()
    req.ParseFromString(value)
    if not req.runtime_path:
        msg = "failed to resolve runtime path: no runtime name"
        raise UnknownError(msg)
    try:
        binary = manager.resolve_binary(req.runtime_path)
    except ContainerdError as exc:
        text = exc.message
        if not text.startswith("failed to resolve runtime path"):
            text = f"failed to resolve runtime path: {text}"
        raise type(exc)(text) from exc
    stdin = req.options.SerializeToString() if req.HasField("options") else b""
    argv = [binary, "-info"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=manager.shim_env(""),
    )
    try:
        async with asyncio.timeout(INFO_TIMEOUT):
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        msg = f"failed to run {_go_list(argv)}: timed out"
        raise UnknownError(msg) from None
    if proc.returncode != 0:
        msg = (
            f"failed to run {_go_list(argv)}: exit status {proc.returncode} "
            f"(stderr: {_go_quote(err.decode(errors='replace'))})"
        )
        raise UnknownError(msg)
    info = introspection_pb2.RuntimeInfo()
    try:
        info.ParseFromString(out)
    except Exception as exc:
        msg = f"failed to unmarshal stdout from {_go_list(argv)} into *types.RuntimeInfo: {exc}"
        raise UnknownError(msg) from exc
    return RESPONSE_URL, bytes(info.SerializeToString())


def _go_list(argv: list[str]) -> str:
    return "[" + " ".join(argv) + "]"


def _go_quote(text: str) -> str:
    from pycontainerd.core.gostr import go_quote

    return go_quote(text)
