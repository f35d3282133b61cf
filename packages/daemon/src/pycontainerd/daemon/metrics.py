"""Prometheus metrics for ``/v1/metrics``: per-RPC counters and latencies, process metrics.

The metric names follow go-grpc-prometheus, which containerd uses
(``grpc_server_started_total``, ``grpc_server_handled_total``,
``grpc_server_handling_seconds``), and the Prometheus process collector
(``process_resident_memory_bytes``, ``process_open_fds``, ...). The text
exposition format is written by hand: no client library needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pycontainerd.daemon.log import fields

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from pycontainerd.core.plugin import MetricsSource

log = logging.getLogger(__name__)

BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Prometheus' default histogram buckets, in seconds."""

_Labels = tuple[tuple[str, str], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: _Labels, extra: tuple[tuple[str, str], ...] = ()) -> str:
    items = (*labels, *extra)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in items) + "}"


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.count += 1


class GrpcMetrics:
    """Counters and latency histograms per gRPC method and status code."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: dict[_Labels, int] = {}
        self._handled: dict[_Labels, int] = {}
        self._latency: dict[_Labels, _Histogram] = {}
        self._bases: dict[tuple[str, str], _Labels] = {}

    @staticmethod
    def _split(full_method: str) -> tuple[str, str]:
        service, _, method = full_method.lstrip("/").partition("/")
        return service, method

    def _base(self, full_method: str, rpc_type: str) -> _Labels:
        """The method's labels, built once per (method, type): this runs on every call."""
        base = self._bases.get((full_method, rpc_type))
        if base is None:
            service, method = self._split(full_method)
            base = (("grpc_method", method), ("grpc_service", service), ("grpc_type", rpc_type))
            self._bases[full_method, rpc_type] = base
        return base

    def started(self, full_method: str, rpc_type: str) -> None:
        """Count an RPC that began (``grpc_server_started_total``)."""
        key = self._base(full_method, rpc_type)
        with self._lock:
            self._started[key] = self._started.get(key, 0) + 1

    def handled(self, full_method: str, rpc_type: str, code: str, seconds: float) -> None:
        """Count an RPC that finished with ``code`` and record its latency."""
        base = self._base(full_method, rpc_type)
        key = (("grpc_code", code), *base)
        with self._lock:
            self._handled[key] = self._handled.get(key, 0) + 1
            hist = self._latency.get(base)
            if hist is None:
                hist = self._latency[base] = _Histogram()
            hist.observe(seconds)

    def render(self) -> list[str]:
        """Exposition lines for the gRPC metrics."""
        out: list[str] = []
        with self._lock:
            out += _family(
                "grpc_server_started_total",
                "counter",
                "Total number of RPCs started on the server.",
                self._started,
            )
            out += _family(
                "grpc_server_handled_total",
                "counter",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                self._handled,
            )
            out += _family(
                "grpc_server_handling_seconds",
                "histogram",
                "Histogram of response latency (seconds) of gRPC that had been application-level"
                " handled by the server.",
            )
            for key, hist in sorted(self._latency.items()):
                for bound, count in zip(BUCKETS, hist.counts, strict=True):
                    le = (("le", _num(bound)),)
                    out.append(f"grpc_server_handling_seconds_bucket{_labels(key, le)} {count}")
                inf = (("le", "+Inf"),)
                out.append(f"grpc_server_handling_seconds_bucket{_labels(key, inf)} {hist.count}")
                out.append(f"grpc_server_handling_seconds_sum{_labels(key)} {_num(hist.total)}")
                out.append(f"grpc_server_handling_seconds_count{_labels(key)} {hist.count}")
        return out


_PAGE_SIZE: Final = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


def process_stats() -> dict[str, float]:
    """RSS, virtual memory, cpu seconds, open/max fds, start time and threads of this process."""
    stats: dict[str, float] = {}
    try:
        with open("/proc/self/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        # fields[0] is state (3rd field of stat); offsets below are field number - 3.
        utime, stime = int(fields[11]), int(fields[12])
        stats["cpu_seconds"] = (utime + stime) / _CLOCK_TICKS
        stats["threads"] = float(fields[17])
        stats["start_time"] = _boot_time() + int(fields[19]) / _CLOCK_TICKS
        stats["virtual_memory_bytes"] = float(fields[20])
        stats["resident_memory_bytes"] = float(int(fields[21]) * _PAGE_SIZE)
    except (OSError, IndexError, ValueError):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stats["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        stats["resident_memory_bytes"] = float(usage.ru_maxrss * 1024)
    with contextlib.suppress(OSError):
        stats["open_fds"] = float(len(os.listdir("/proc/self/fd")))
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    stats["max_fds"] = float(soft)
    return stats


def render_process() -> list[str]:
    """Exposition lines for the process collector's metrics."""
    stats = process_stats()
    spec = [
        ("process_cpu_seconds_total", "counter", "cpu_seconds",
         "Total user and system CPU time spent in seconds."),
        ("process_open_fds", "gauge", "open_fds", "Number of open file descriptors."),
        ("process_max_fds", "gauge", "max_fds", "Maximum number of open file descriptors."),
        ("process_resident_memory_bytes", "gauge", "resident_memory_bytes",
         "Resident memory size in bytes."),
        ("process_virtual_memory_bytes", "gauge", "virtual_memory_bytes",
         "Virtual memory size in bytes."),
        ("process_start_time_seconds", "gauge", "start_time",
         "Start time of the process since unix epoch in seconds."),
        ("process_threads", "gauge", "threads", "Number of OS threads in the process."),
    ]  # fmt: skip
    out: list[str] = []
    for name, kind, key, help_text in spec:
        if key in stats:
            out += _family(name, kind, help_text)
            out.append(f"{name} {_num(stats[key])}")
    return out


def _family(
    name: str, kind: str, help_text: str, samples: Mapping[_Labels, int] | None = None
) -> list[str]:
    """A metric family's ``HELP`` and ``TYPE`` lines, then one line per labelled sample."""
    out = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    if samples is not None:
        out += [f"{name}{_labels(k)} {v}" for k, v in sorted(samples.items())]
    return out


def render(grpc_metrics: GrpcMetrics | None, sources: Iterable[MetricsSource] = ()) -> bytes:
    """The whole ``/v1/metrics`` page: process, gRPC, then each plugin's own lines.

    A source that raises is logged and left out; the rest of the page is served.
    """
    lines = render_process()
    if grpc_metrics is not None:
        lines += grpc_metrics.render()
    for source in sources:
        try:
            lines += list(source.metrics_lines())
        except Exception:
            log.exception("metrics source failed", extra=fields(source=repr(source)))
    return ("\n".join(lines) + "\n").encode()


def now() -> float:
    """A monotonic clock for latencies."""
    return time.perf_counter()
