"""Container metrics from the cgroup filesystem, and OOM notification (cgroup v1).

``Stats`` answers with an ``Any`` holding ``io.containerd.cgroups.v1.Metrics``
(hybrid/legacy hierarchy: one mount per controller under ``/sys/fs/cgroup``)
or ``io.containerd.cgroups.v2.Metrics`` (unified hierarchy, detected by
``/sys/fs/cgroup/cgroup.controllers``), the types containerd's ``ctr tasks
metrics`` prints, built with the generated classes of
``pycontainerd.api.types.cgroups``; pids, CPU and memory are filled in (what
``ctr`` shows).

OOM: with cgroup v1 the shim registers an eventfd on ``memory.oom_control``
through ``cgroup.event_control`` and reports ``/tasks/oom`` when it fires and
the ``oom_kill`` counter grew. cgroup v2 OOM watching is not implemented.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

    from google.protobuf.message import Message


__all__ = [
    "CGROUP_ROOT",
    "V1_METRICS",
    "V2_METRICS",
    "OomWatcher",
    "is_unified",
    "metrics",
    "pid_path",
]

CGROUP_ROOT: Final = "/sys/fs/cgroup"
V1_METRICS: Final = "io.containerd.cgroups.v1.Metrics"
V2_METRICS: Final = "io.containerd.cgroups.v2.Metrics"

# memory.stat keys whose MemoryStat field is spelled differently (v1); every
# other key of memory.stat that MemoryStat has is stored under its own name.
_V1_RENAMED: Final = {
    "pgpgin": "pg_pg_in",
    "pgpgout": "pg_pg_out",
    "pgfault": "pg_fault",
    "pgmajfault": "pg_maj_fault",
    "hierarchical_memsw_limit": "hierarchical_swap_limit",
    "total_pgpgin": "total_pg_pg_in",
    "total_pgpgout": "total_pg_pg_out",
    "total_pgfault": "total_pg_fault",
    "total_pgmajfault": "total_pg_maj_fault",
}


def is_unified(root: str = CGROUP_ROOT) -> bool:
    """Whether ``root`` is a cgroup v2 (unified) mount."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def _read_int(path: str) -> int:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return 0
    if text == "max":
        return 0
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return 0


def _read_kv(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                out[parts[0]] = int(parts[1])
    return out


def _set_stat(msg: Message, stat: dict[str, int], renamed: Mapping[str, str]) -> None:
    """Copy the ``memory.stat`` counters that ``msg`` (a MemoryStat) has a field for."""
    fields = msg.DESCRIPTOR.fields_by_name
    for key, value in stat.items():
        name = renamed.get(key, key)
        if name in fields and fields[name].type == fields[name].TYPE_UINT64:
            setattr(msg, name, value)


def _v1(path: str, root: str) -> bytes:
    from pycontainerd.api.types.cgroups.v1 import metrics_pb2 as v1

    def ctl(controller: str, name: str) -> str:
        return os.path.join(root, controller, path.lstrip("/"), name)

    m = v1.Metrics()
    m.pids.current = _read_int(ctl("pids", "pids.current"))
    m.pids.limit = _read_int(ctl("pids", "pids.max"))
    usage = m.cpu.usage
    usage.total = _read_int(ctl("cpuacct", "cpuacct.usage"))
    usage.kernel = _read_int(ctl("cpuacct", "cpuacct.usage_sys"))
    usage.user = _read_int(ctl("cpuacct", "cpuacct.usage_user"))
    with (
        contextlib.suppress(OSError, ValueError),
        open(ctl("cpuacct", "cpuacct.usage_percpu")) as f,
    ):
        usage.per_cpu.extend(int(v) for v in f.read().split())
    throttle = _read_kv(ctl("cpu", "cpu.stat"))
    m.cpu.throttling.periods = throttle.get("nr_periods", 0)
    m.cpu.throttling.throttled_periods = throttle.get("nr_throttled", 0)
    m.cpu.throttling.throttled_time = throttle.get("throttled_time", 0)
    _set_stat(m.memory, _read_kv(ctl("memory", "memory.stat")), _V1_RENAMED)
    entry = m.memory.usage
    entry.limit = _read_int(ctl("memory", "memory.limit_in_bytes"))
    entry.usage = _read_int(ctl("memory", "memory.usage_in_bytes"))
    entry.max = _read_int(ctl("memory", "memory.max_usage_in_bytes"))
    entry.failcnt = _read_int(ctl("memory", "memory.failcnt"))
    return m.SerializeToString()


def _v2(path: str, root: str) -> bytes:
    from pycontainerd.api.types.cgroups.v2 import metrics_pb2 as v2

    base = os.path.join(root, path.lstrip("/"))
    m = v2.Metrics()
    m.pids.current = _read_int(os.path.join(base, "pids.current"))
    m.pids.limit = _read_int(os.path.join(base, "pids.max"))
    cpu = _read_kv(os.path.join(base, "cpu.stat"))
    for name in (
        "usage_usec",
        "user_usec",
        "system_usec",
        "nr_periods",
        "nr_throttled",
        "throttled_usec",
        "nr_bursts",
        "burst_usec",
    ):
        setattr(m.cpu, name, cpu.get(name, 0))
    _set_stat(m.memory, _read_kv(os.path.join(base, "memory.stat")), {})
    m.memory.usage = _read_int(os.path.join(base, "memory.current"))
    m.memory.usage_limit = _read_int(os.path.join(base, "memory.max"))
    m.memory.swap_usage = _read_int(os.path.join(base, "memory.swap.current"))
    m.memory.swap_limit = _read_int(os.path.join(base, "memory.swap.max"))
    return m.SerializeToString()


def pid_path(pid: int, root: str = CGROUP_ROOT) -> str:
    """The cgroup of process ``pid`` ("" if unknown), as :func:`metrics` takes it.

    The unified entry on cgroup v2, the ``memory`` controller's on v1.
    """
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return ""
    wanted = "" if is_unified(root) else "memory"
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == wanted or wanted in controllers.split(","):
            return path
    return ""


def metrics(cgroup_path: str, root: str = CGROUP_ROOT) -> tuple[str, bytes]:
    """(type URL, marshalled Metrics) for the container in ``cgroup_path``.

    Raises:
        FileNotFoundError: no cgroup filesystem is mounted at ``root`` or the
            container's cgroup does not exist.
    """
    if is_unified(root):
        if not os.path.isdir(os.path.join(root, cgroup_path.lstrip("/"))):
            msg = f"cgroup {cgroup_path} not found under {root}"
            raise FileNotFoundError(msg)
        return V2_METRICS, _v2(cgroup_path, root)
    if not os.path.isdir(
        os.path.join(root, "memory", cgroup_path.lstrip("/"))
    ) and not os.path.isdir(os.path.join(root, "pids", cgroup_path.lstrip("/"))):
        msg = f"cgroup {cgroup_path} not found under {root} (v1)"
        raise FileNotFoundError(msg)
    return V1_METRICS, _v1(cgroup_path, root)


class OomWatcher:
    """An eventfd that becomes readable on OOM in a v1 memory cgroup."""

    def __init__(self, cgroup_path: str, root: str = CGROUP_ROOT) -> None:
        self.dir = os.path.join(root, "memory", cgroup_path.lstrip("/"))
        control = os.open(os.path.join(self.dir, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self.fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            try:
                with open(os.path.join(self.dir, "cgroup.event_control"), "w") as f:
                    f.write(f"{self.fd} {control}")
            except OSError:
                os.close(self.fd)
                raise
        finally:
            os.close(control)
        self.kills = self.oom_kills()

    def oom_kills(self) -> int:
        """The cgroup's ``oom_kill`` counter (0 once the cgroup is gone)."""
        return _read_kv(os.path.join(self.dir, "memory.oom_control")).get("oom_kill", 0)

    def fired(self) -> bool:
        """Drain the eventfd; True if a new OOM kill happened."""
        with contextlib.suppress(OSError):
            os.eventfd_read(self.fd)
        kills = self.oom_kills()
        new = kills > self.kills
        self.kills = max(kills, self.kills)
        return new

    def close(self) -> None:
        """Close the eventfd."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
