"""OCI runtime specs with containerd's defaults, built from composable options.

:func:`generate_spec` returns the default Linux spec a containerd client
builds (``oci.populateDefaultUnixSpec``): the five namespaces (pid, ipc, uts,
mount, network), the standard ``/proc``, ``/dev``, ``/dev/pts``,
``/dev/shm``, ``/dev/mqueue``, ``/sys`` and ``/run`` mounts, the default
capability set (no inheritable or ambient capabilities), ``RLIMIT_NOFILE``
1024, masked and read-only ``/proc`` and ``/sys`` paths, all devices denied,
and the cgroups path ``/<namespace>/<id>``. Options (``SpecOpt``: a function
that edits the spec dict in place) adjust it, the way ``oci.SpecOpts`` do::

    spec = generate_spec("default", "web", with_process_args("nginx"), with_memory_limit(64 << 20))

The spec is a plain JSON-ready dict (``config.json``); :func:`spec_bytes`
serializes it for a container's ``spec`` field
(type URL :data:`SPEC_TYPE_URL`). Pure Python: no grpc, no protobuf.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from pycontainerd.core.oci import DEFAULT_CAPABILITIES, DEFAULT_PATH, MASKED_PATHS, READONLY_PATHS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

Spec: TypeAlias = "dict[str, Any]"
SpecOpt: TypeAlias = "Callable[[Spec], None]"

SPEC_TYPE_URL: Final = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
OCI_VERSION: Final = "1.0.2-dev"
DEFAULT_PATH_ENV: Final = f"PATH={DEFAULT_PATH}"
ALL_CAPABILITIES: Final = (
    *DEFAULT_CAPABILITIES,
    "CAP_DAC_READ_SEARCH",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_LEASE",
    "CAP_AUDIT_CONTROL",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
)
DEFAULT_NAMESPACES: Final = ("pid", "ipc", "uts", "mount", "network")
_MOUNTS: Final = (
    ("/proc", "proc", "proc", ("nosuid", "noexec", "nodev")),
    ("/dev", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
    (
        "/dev/pts",
        "devpts",
        "devpts",
        ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"),
    ),
    ("/dev/shm", "tmpfs", "shm", ("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")),  # noqa: S108 - a mount point, not a temp file
    ("/dev/mqueue", "mqueue", "mqueue", ("nosuid", "noexec", "nodev")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "noexec", "nodev", "ro")),
    ("/run", "tmpfs", "tmpfs", ("nosuid", "strictatime", "mode=755", "size=65536k")),
)


def default_spec(namespace: str, container_id: str) -> Spec:
    """Containerd's default Linux spec for ``container_id`` in ``namespace``."""
    caps = list(DEFAULT_CAPABILITIES)
    return {
        "ociVersion": OCI_VERSION,
        "root": {"path": "rootfs"},
        "process": {
            "cwd": "/",
            "noNewPrivileges": True,
            "user": {"uid": 0, "gid": 0},
            "env": [DEFAULT_PATH_ENV],
            "capabilities": {
                "bounding": list(caps),
                "permitted": list(caps),
                "effective": list(caps),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "mounts": [
            {"destination": dest, "type": typ, "source": src, "options": list(opts)}
            for dest, typ, src, opts in _MOUNTS
        ],
        "linux": {
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
            "cgroupsPath": f"/{namespace}/{container_id}",
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in DEFAULT_NAMESPACES],
        },
    }


def generate_spec(namespace: str, container_id: str, *opts: SpecOpt) -> Spec:
    """The default spec with ``opts`` applied in order."""
    spec = default_spec(namespace, container_id)
    for opt in opts:
        opt(spec)
    return spec


def spec_bytes(spec: Spec) -> bytes:
    """``spec`` as the JSON a container record and ``config.json`` carry."""
    return json.dumps(spec, separators=(",", ":")).encode()


# -- options ------------------------------------------------------------------


def with_process_args(*args: str) -> SpecOpt:
    """Set the process's argv."""

    def opt(spec: Spec) -> None:
        spec["process"]["args"] = list(args)

    return opt


def with_env(env: Iterable[str]) -> SpecOpt:
    """Add ``KEY=VALUE`` entries; a key already set is replaced."""

    def opt(spec: Spec) -> None:
        current: list[str] = spec["process"].setdefault("env", [])
        for entry in env:
            key = entry.split("=", 1)[0]
            current[:] = [e for e in current if e.split("=", 1)[0] != key]
            current.append(entry)

    return opt


def with_cwd(cwd: str) -> SpecOpt:
    """Set the working directory."""

    def opt(spec: Spec) -> None:
        spec["process"]["cwd"] = cwd

    return opt


def with_user_id(uid: int, gid: int = 0) -> SpecOpt:
    """Run as ``uid``:``gid``."""

    def opt(spec: Spec) -> None:
        spec["process"]["user"] = {"uid": uid, "gid": gid}

    return opt


def with_tty(spec: Spec) -> None:
    """Give the process a terminal (``TERM=xterm`` as containerd does)."""
    spec["process"]["terminal"] = True
    with_env(["TERM=xterm"])(spec)


def with_hostname(name: str) -> SpecOpt:
    """Set the container's hostname."""

    def opt(spec: Spec) -> None:
        spec["hostname"] = name

    return opt


def with_host_namespace(kind: str) -> SpecOpt:
    """Share the host's ``kind`` namespace (drop it from the spec)."""

    def opt(spec: Spec) -> None:
        linux = spec.setdefault("linux", {})
        linux["namespaces"] = [n for n in linux.get("namespaces", []) if n["type"] != kind]

    return opt


def with_host_network(spec: Spec) -> None:
    """Use the host's network, with its ``/etc/hosts`` and ``/etc/resolv.conf``."""
    with_host_namespace("network")(spec)
    for path in ("/etc/hosts", "/etc/resolv.conf"):
        with_mounts(
            [{"destination": path, "type": "bind", "source": path, "options": ["rbind", "ro"]}]
        )(spec)


def with_mounts(mounts: Iterable[Mapping[str, Any]]) -> SpecOpt:
    """Add mounts (OCI mount dicts); one with the same destination is replaced."""

    def opt(spec: Spec) -> None:
        current: list[dict[str, Any]] = spec.setdefault("mounts", [])
        for m in mounts:
            current[:] = [c for c in current if c["destination"] != m["destination"]]
            current.append(copy.deepcopy(dict(m)))

    return opt


def with_privileged(spec: Spec) -> None:
    """All capabilities, all devices, no masked or read-only paths, ``/sys`` writable."""
    caps = list(ALL_CAPABILITIES)
    spec["process"]["capabilities"] = {
        "bounding": list(caps),
        "permitted": list(caps),
        "effective": list(caps),
    }
    linux = spec.setdefault("linux", {})
    linux["maskedPaths"] = []
    linux["readonlyPaths"] = []
    linux.setdefault("resources", {})["devices"] = [{"allow": True, "access": "rwm"}]
    for m in spec.get("mounts", []):
        if m["destination"] == "/sys":
            m["options"] = [o for o in m["options"] if o != "ro"]


def with_memory_limit(limit: int) -> SpecOpt:
    """Limit memory to ``limit`` bytes."""

    def opt(spec: Spec) -> None:
        resources = spec.setdefault("linux", {}).setdefault("resources", {})
        resources.setdefault("memory", {})["limit"] = limit

    return opt


def with_cpus(cpus: float, period: int = 100_000) -> SpecOpt:
    """Limit CPU time to ``cpus`` CPUs (quota over ``period`` microseconds)."""

    def opt(spec: Spec) -> None:
        resources = spec.setdefault("linux", {}).setdefault("resources", {})
        resources["cpu"] = {"quota": int(cpus * period), "period": period}

    return opt


def with_annotations(annotations: Mapping[str, str]) -> SpecOpt:
    """Add annotations."""

    def opt(spec: Spec) -> None:
        spec.setdefault("annotations", {}).update(annotations)

    return opt


def with_rootfs_path(path: str) -> SpecOpt:
    """Point ``root.path`` at ``path`` (``ctr run --rootfs``)."""

    def opt(spec: Spec) -> None:
        spec["root"] = {"path": path}

    return opt
