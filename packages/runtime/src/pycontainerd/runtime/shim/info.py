"""``containerd-shim-pyrunc-v2 -info``: the runtime info protocol of containerd 2.x.

The daemon runs the shim binary with ``-info`` (no other flags needed), writes
the marshalled runtime options (a protobuf ``Any``, possibly empty) on its
stdin and reads a marshalled ``containerd.types.RuntimeInfo`` from its stdout.
Introspection's ``PluginInfo`` for ``io.containerd.runtime.v2.task`` answers
with it, and clients (``ctr plugins inspect-runtime``, nerdctl, BuildKit) use
the features to decide what the runtime supports.

As upstream's runc shim: the options, when given, must be runc options
(``containerd.runc.v1.Options``) and are echoed back; their ``binary_name``
picks the runc binary; ``features`` is the JSON of ``<runc> features`` under
the runtime-spec type URL (left out when the runtime has no ``features``
command).

Imports protobuf and generated messages only (never grpc or asyncio).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

__all__ = ["FEATURES_URL", "run", "runtime_info"]

RUNC_OPTIONS_URL = "containerd.runc.v1.Options"
FEATURES_URL = "types.containerd.io/opencontainers/runtime-spec/1/features/Features"


class InfoError(Exception):
    """The info request cannot be answered; the text goes to stderr."""


def runtime_info(options: bytes, name: str, version: str) -> bytes:
    """The marshalled ``RuntimeInfo`` for the marshalled options ``options``.

    Raises:
        InfoError: options of another type, or no runc binary.
    """
    from google.protobuf import any_pb2

    from pycontainerd.api.types import introspection_pb2
    from pycontainerd.api.types.runc.options import oci_pb2

    info = introspection_pb2.RuntimeInfo(name=name)
    info.version.version = version
    binary = "runc"
    if options:
        given = any_pb2.Any()
        try:
            given.ParseFromString(options)
        except Exception as exc:
            msg = f"failed to read runtime options (*options.Options): {exc}"
            raise InfoError(msg) from exc
        if given.type_url.removeprefix("type.googleapis.com/") != RUNC_OPTIONS_URL:
            msg = (
                "failed to read runtime options (*options.Options): "
                f"invalid type {given.type_url}: invalid argument"
            )
            raise InfoError(msg)
        opts = oci_pb2.Options()
        opts.ParseFromString(given.value)
        info.options.CopyFrom(given)
        binary = opts.binary_name or binary
    path = shutil.which(binary)
    if path is None:
        msg = (
            f'failed to look up the path of "{binary}": exec: "{binary}": '
            "executable file not found in $PATH"
        )
        raise InfoError(msg)
    features = _features(path)
    if features is not None:
        info.features.type_url = FEATURES_URL
        info.features.value = features
    return bytes(info.SerializeToString())


def _features(path: str) -> bytes | None:
    """``<runc> features`` as compact JSON, or None when it has no such command."""
    try:
        out = subprocess.run(
            [path, "features"],
            capture_output=True,
            check=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        ).stdout
        doc = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return json.dumps(doc, separators=(",", ":")).encode()


def run(name: str, version: str) -> int:
    """Answer ``-info`` on stdin/stdout; 1 with the reason on stderr when it cannot."""
    options = sys.stdin.buffer.read() if not sys.stdin.closed else b""
    try:
        data = runtime_info(options, name, version)
    except InfoError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.flush()
    return 0
