"""Container resource usage read from the cgroup filesystem (v1 and v2).

For the cgroupfs driver: the container's ``cgroupsPath`` is a path under
each v1 controller's mount (``cpuacct``, ``memory``), or under the v2 unified
mount. CPU is the cumulative usage in nanoseconds; memory usage is the
charged bytes, the working set that minus inactive file pages (as the kubelet
computes it).

Importing this module must not import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True, slots=True)
class Usage:
    """One sample of a cgroup's usage (None = not available)."""

    cpu_ns: int | None
    memory_bytes: int | None
    working_set_bytes: int | None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat_field(path: Path, key: str) -> int | None:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def is_v2(root: Path = CGROUP_ROOT) -> bool:
    """Whether ``root`` is the cgroup v2 unified hierarchy."""
    return (root / "cgroup.controllers").is_file()


def read_usage(cgroups_path: str, root: Path = CGROUP_ROOT) -> Usage:
    """The usage of the cgroup ``cgroups_path`` (cgroupfs driver form)."""
    rel = cgroups_path.lstrip("/")
    if is_v2(root):
        d = root / rel
        usec = _stat_field(d / "cpu.stat", "usage_usec")
        mem = _read_int(d / "memory.current")
        inactive = _stat_field(d / "memory.stat", "inactive_file") or 0
        return Usage(
            cpu_ns=usec * 1000 if usec is not None else None,
            memory_bytes=mem,
            working_set_bytes=max(mem - inactive, 0) if mem is not None else None,
        )
    cpu = _read_int(root / "cpuacct" / rel / "cpuacct.usage")
    mem_dir = root / "memory" / rel
    mem = _read_int(mem_dir / "memory.usage_in_bytes")
    inactive = _stat_field(mem_dir / "memory.stat", "total_inactive_file") or 0
    return Usage(
        cpu_ns=cpu,
        memory_bytes=mem,
        working_set_bytes=max(mem - inactive, 0) if mem is not None else None,
    )


def process_count(cgroups_path: str, root: Path = CGROUP_ROOT) -> int | None:
    """How many processes the cgroup ``cgroups_path`` holds (its ``cgroup.procs``).

    Processes, not threads, as ``runc ps`` lists them; on v1 the ``pids``
    controller's copy, else the ``memory`` one's.
    """
    rel = cgroups_path.lstrip("/")
    dirs = [root / rel] if is_v2(root) else [root / "pids" / rel, root / "memory" / rel]
    for d in dirs:
        try:
            return len((d / "cgroup.procs").read_text().split())
        except OSError:
            continue
    return None


def oom_killed(cgroups_path: str, root: Path = CGROUP_ROOT) -> bool:
    """Whether the kernel's OOM killer killed a process of the cgroup ``cgroups_path``.

    Read from ``memory.events`` (v2) or ``memory.oom_control`` (v1), which
    count OOM kills while the cgroup exists (the runtime removes it only
    when the task is deleted).
    """
    rel = cgroups_path.lstrip("/")
    if is_v2(root):
        count = _stat_field(root / rel / "memory.events", "oom_kill")
    else:
        count = _stat_field(root / "memory" / rel / "memory.oom_control", "oom_kill")
    return bool(count)


@dataclass(frozen=True, slots=True)
class InterfaceUsage:
    """One network interface's counters."""

    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


def read_net_dev(pid: int) -> list[InterfaceUsage]:
    """The interfaces of ``pid``'s network namespace (``/proc/<pid>/net/dev``), ``lo`` left out."""
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return []
    out = []
    for line in lines:
        name, _, counters = line.partition(":")
        fields = counters.split()
        if name.strip() == "lo" or len(fields) < 11:
            continue
        out.append(
            InterfaceUsage(
                name=name.strip(),
                rx_bytes=int(fields[0]),
                rx_errors=int(fields[2]),
                tx_bytes=int(fields[8]),
                tx_errors=int(fields[10]),
            )
        )
    return out
