"""Container metrics from the cgroup filesystem, and OOM notification (cgroup v1).

``Stats`` answers with an ``Any`` holding ``io.containerd.cgroups.v1.Metrics``
(hybrid/legacy hierarchy: one mount per controller under ``/sys/fs/cgroup``)
or ``io.containerd.cgroups.v2.Metrics`` (unified hierarchy, detected by
``/sys/fs/cgroup/cgroup.controllers``), the types containerd's ``ctr tasks
metrics`` prints. The messages are encoded here by hand with the field
numbers of containerd/cgroups' ``metrics.proto``; only pids, CPU and memory
are filled in (what ``ctr`` shows).

OOM: with cgroup v1 the shim registers an eventfd on ``memory.oom_control``
through ``cgroup.event_control`` and reports ``/tasks/oom`` when it fires and
the ``oom_kill`` counter grew. cgroup v2 OOM watching is not implemented.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

from pycontainerd.runtime.shim.wire import uvarint

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

# memory.stat keys in the order of MemoryStat's first fields (1, 2, ...).
_V1_MEMORY_STAT = tuple(
    [
        "cache",
        "rss",
        "rss_huge",
        "mapped_file",
        "dirty",
        "writeback",
        "pgpgin",
        "pgpgout",
        "pgfault",
        "pgmajfault",
        "inactive_anon",
        "active_anon",
        "inactive_file",
        "active_file",
        "unevictable",
        "hierarchical_memory_limit",
        "hierarchical_memsw_limit",
        "total_cache",
        "total_rss",
        "total_rss_huge",
        "total_mapped_file",
        "total_dirty",
        "total_writeback",
        "total_pgpgin",
        "total_pgpgout",
        "total_pgfault",
        "total_pgmajfault",
        "total_inactive_anon",
        "total_active_anon",
        "total_inactive_file",
        "total_active_file",
        "total_unevictable",
    ]
)
_V2_MEMORY_STAT = tuple(
    [
        "anon",
        "file",
        "kernel_stack",
        "slab",
        "sock",
        "shmem",
        "file_mapped",
        "file_dirty",
        "file_writeback",
        "anon_thp",
        "inactive_anon",
        "active_anon",
        "inactive_file",
        "active_file",
        "unevictable",
        "slab_reclaimable",
        "slab_unreclaimable",
        "pgfault",
        "pgmajfault",
        "workingset_refault",
        "workingset_activate",
        "workingset_nodereclaim",
        "pgrefill",
        "pgscan",
        "pgsteal",
        "pgactivate",
        "pgdeactivate",
        "pglazyfree",
        "pglazyfreed",
        "thp_fault_alloc",
        "thp_collapse_alloc",
    ]
)


def is_unified(root: str = CGROUP_ROOT) -> bool:
    """Whether ``root`` is a cgroup v2 (unified) mount."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def _msg(*fields: tuple[int, int | bytes]) -> bytes:
    out = bytearray()
    for num, value in fields:
        if isinstance(value, bytes):
            out += uvarint(num << 3 | 2) + uvarint(len(value)) + value
        elif value:
            out += uvarint(num << 3) + uvarint(value)
    return bytes(out)


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


def _v1(path: str, root: str) -> bytes:
    def ctl(controller: str, name: str) -> str:
        return os.path.join(root, controller, path.lstrip("/"), name)

    pids = _msg(
        (1, _read_int(ctl("pids", "pids.current"))), (2, _read_int(ctl("pids", "pids.max")))
    )
    per_cpu = b""
    with contextlib.suppress(OSError), open(ctl("cpuacct", "cpuacct.usage_percpu")) as f:
        packed = b"".join(uvarint(int(v)) for v in f.read().split())
        per_cpu = packed
    usage = _msg(
        (1, _read_int(ctl("cpuacct", "cpuacct.usage"))),
        (2, _read_int(ctl("cpuacct", "cpuacct.usage_sys"))),
        (3, _read_int(ctl("cpuacct", "cpuacct.usage_user"))),
        (4, per_cpu) if per_cpu else (4, 0),
    )
    throttle_kv = _read_kv(ctl("cpu", "cpu.stat"))
    throttle = _msg(
        (1, throttle_kv.get("nr_periods", 0)),
        (2, throttle_kv.get("nr_throttled", 0)),
        (3, throttle_kv.get("throttled_time", 0)),
    )
    cpu = _msg((1, usage), (2, throttle))
    stat = _read_kv(ctl("memory", "memory.stat"))
    names = _V1_MEMORY_STAT
    entry = _msg(
        (1, _read_int(ctl("memory", "memory.limit_in_bytes"))),
        (2, _read_int(ctl("memory", "memory.usage_in_bytes"))),
        (3, _read_int(ctl("memory", "memory.max_usage_in_bytes"))),
        (4, _read_int(ctl("memory", "memory.failcnt"))),
    )
    memory = _msg(*[(i + 1, stat.get(n, 0)) for i, n in enumerate(names)], (33, entry))
    return _msg((2, pids), (3, cpu), (4, memory))


def _v2(path: str, root: str) -> bytes:
    base = os.path.join(root, path.lstrip("/"))
    pids = _msg(
        (1, _read_int(os.path.join(base, "pids.current"))),
        (2, _read_int(os.path.join(base, "pids.max"))),
    )
    cpu_kv = _read_kv(os.path.join(base, "cpu.stat"))
    cpu = _msg(
        *[
            (i + 1, cpu_kv.get(n, 0))
            for i, n in enumerate(
                (
                    "usage_usec",
                    "user_usec",
                    "system_usec",
                    "nr_periods",
                    "nr_throttled",
                    "throttled_usec",
                )
            )
        ]
    )
    mem_kv = _read_kv(os.path.join(base, "memory.stat"))
    names = _V2_MEMORY_STAT
    memory = _msg(
        *[(i + 1, mem_kv.get(n, 0)) for i, n in enumerate(names)],
        (32, _read_int(os.path.join(base, "memory.current"))),
        (33, _read_int(os.path.join(base, "memory.max"))),
        (34, _read_int(os.path.join(base, "memory.swap.current"))),
        (35, _read_int(os.path.join(base, "memory.swap.max"))),
    )
    return _msg((1, pids), (2, cpu), (4, memory))


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
