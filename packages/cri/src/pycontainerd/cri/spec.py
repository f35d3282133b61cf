"""OCI runtime specs for the pause container of a pod sandbox.

Written for this project from the OCI runtime spec: the sandbox's process
runs the image's entrypoint and command as the image's (numeric) user, in new
PID, IPC, UTS and mount namespaces and in the pod's pinned network namespace
(or the host's for hostNetwork), on a read-only root.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import Any

from pycontainerd.core.oci import DEFAULT_CAPABILITIES, DEFAULT_PATH, MASKED_PATHS, READONLY_PATHS


def _mount(destination: str, kind: str, source: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": list(options)}


def default_mounts() -> list[dict[str, Any]]:
    """The mounts every container (and the pause container) gets."""
    nosuid_noexec_nodev = ("nosuid", "noexec", "nodev")
    return [
        _mount("/proc", "proc", "proc", *nosuid_noexec_nodev),
        _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        _mount(
            "/dev/pts", "devpts", "devpts",
            "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5",
        ),
        _mount("/dev/mqueue", "mqueue", "mqueue", *nosuid_noexec_nodev),
        _mount("/sys", "sysfs", "sysfs", *nosuid_noexec_nodev, "ro"),
        _mount("/dev/shm", "tmpfs", "shm", *nosuid_noexec_nodev, "mode=1777", "size=65536k"),  # noqa: S108
    ]  # fmt: skip


def parse_user(user: str) -> tuple[int, int]:
    """A numeric ``uid[:gid]`` image user; names are resolved in a later step.

    Raises:
        ValueError: the user is not numeric.
    """
    if not user:
        return 0, 0
    uid_text, _, gid_text = user.partition(":")
    uid = int(uid_text)
    gid = int(gid_text) if gid_text else 0
    return uid, gid


def cgroups_path(parent: str, sandbox_id: str, *, systemd: bool) -> str:
    """The pause container's cgroup: ``slice:cri-containerd:id`` or ``parent/id``."""
    if systemd:
        return f"{parent or 'system.slice'}:cri-containerd:{sandbox_id}"
    return f"{parent.rstrip('/') or '/k8s.io'}/{sandbox_id}"


def sandbox_spec(
    *,
    args: list[str],
    env: list[str],
    user: tuple[int, int],
    hostname: str,
    netns: str | None,
    cgroups: str,
    sysctls: dict[str, str],
    host_pid: bool,
    host_ipc: bool,
    annotations: dict[str, str],
) -> dict[str, Any]:
    """The spec of a pause container (``netns`` None = the host's network)."""
    namespaces: list[dict[str, str]] = [{"type": "uts"}, {"type": "mount"}]
    if not host_pid:
        namespaces.append({"type": "pid"})
    if not host_ipc:
        namespaces.append({"type": "ipc"})
    if netns is not None:
        namespaces.append({"type": "network", "path": netns})
    if not any(e.startswith("PATH=") for e in env):
        env = [f"PATH={DEFAULT_PATH}", *env]
    mounts = default_mounts()
    return {
        "ociVersion": "1.1.0",
        "process": {
            "terminal": False,
            "user": {"uid": user[0], "gid": user[1]},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                k: list(DEFAULT_CAPABILITIES) for k in ("bounding", "effective", "permitted")
            },
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": hostname,
        "mounts": mounts,
        "annotations": annotations,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups,
            "sysctl": sysctls,
            "resources": {"devices": [{"allow": False, "access": "rwm"}], "cpu": {"shares": 2}},
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
