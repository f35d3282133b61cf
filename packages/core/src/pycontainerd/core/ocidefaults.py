"""The defaults every OCI runtime spec written here starts from (Linux containers).

containerd's own defaults: the ``PATH`` of a process, the capabilities a
non-privileged container keeps, and the ``/proc`` and ``/sys`` paths masked or
made read-only. The client's spec builder (``pycontainerd.client.oci``) and
the CRI's (``pycontainerd.cri.spec``, ``pycontainerd.cri.containers``) both
use them.

Pure standard library.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEFAULT_CAPABILITIES", "DEFAULT_PATH", "MASKED_PATHS", "READONLY_PATHS"]

DEFAULT_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""A process's ``PATH`` when its image sets none."""

DEFAULT_CAPABILITIES: Final = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
"""The capabilities of a non-privileged container, in containerd's order."""

MASKED_PATHS: Final = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
"""Paths hidden from a non-privileged container."""

READONLY_PATHS: Final = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
"""Paths a non-privileged container sees read-only."""
