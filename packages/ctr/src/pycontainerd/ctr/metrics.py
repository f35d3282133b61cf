"""What ``ctr tasks metrics`` prints: cgroup v1/v2 metrics as a table or as ctr's JSON.

The samples arrive as ``Any`` values (``io.containerd.cgroups.v1.Metrics`` or
``io.containerd.cgroups.v2.Metrics``) and are decoded with the generated
classes. Importing this module must not import grpc or protobuf: the
generated modules are imported inside the functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, TypeVar

from pycontainerd.ctr.common import UsageError
from pycontainerd.ctr.tabwriter import TabWriter

if TYPE_CHECKING:
    from datetime import datetime
    from typing import TextIO

    from google.protobuf.message import Message

    from pycontainerd.client.tasks import Metric

_M = TypeVar("_M", bound="Message")

_V1_METRICS: Final = "io.containerd.cgroups.v1.Metrics"
_V2_METRICS: Final = "io.containerd.cgroups.v2.Metrics"
_NOT_CGROUPS: Final = "cannot convert metric data to cgroups.Metrics or windows.Statistics"


def _document(msg: Message) -> dict[str, Any]:
    """A message as ctr's JSON shows it: fields by proto name, unset and zero fields left out."""
    doc: dict[str, Any] = {}
    for field, value in msg.ListFields():
        if field.type == field.TYPE_MESSAGE:
            if field.is_repeated:
                doc[field.name] = [_document(item) for item in value]
            else:
                doc[field.name] = _document(value)
        elif field.is_repeated:
            doc[field.name] = list(value)
        else:
            doc[field.name] = value
    return doc


def parse_message(cls: type[_M], data: bytes) -> _M:
    """``data`` decoded as ``cls``; a ``UsageError`` (``malformed metrics: ...``) if it is not."""
    from google.protobuf.message import DecodeError

    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as e:
        msg_text = f"malformed metrics: {e}"
        raise UsageError(msg_text) from e
    return msg


def cgroup_v1_metrics(data: bytes) -> dict[str, Any]:
    """``io.containerd.cgroups.v1.Metrics`` as the nested dict ctr's JSON shows (zeros omitted)."""
    from pycontainerd.api.types.cgroups.v1 import metrics_pb2

    return _document(parse_message(metrics_pb2.Metrics, data))


def cgroup_v2_metrics(data: bytes) -> dict[str, Any]:
    """``io.containerd.cgroups.v2.Metrics`` as a nested dict (zeros omitted)."""
    from pycontainerd.api.types.cgroups.v2 import metrics_pb2

    return _document(parse_message(metrics_pb2.Metrics, data))


def go_time(ts: datetime) -> str:
    """A timestamp as Go prints a ``time.Time``: ``2006-01-02 15:04:05.999999999 +0000 UTC``."""
    from datetime import UTC

    t = ts.astimezone(UTC)
    frac = f"{t.microsecond * 1000:09d}".rstrip("0")
    return t.strftime("%Y-%m-%d %H:%M:%S") + (f".{frac}" if frac else "") + " +0000 UTC"


def write_metrics_table(out: TextIO, metric: Metric) -> None:
    """Write the table ``ctr tasks metrics`` prints for one sample."""
    if metric.data is None:
        raise UsageError(_NOT_CGROUPS)
    kind = metric.data.type_url.rpartition("/")[2]
    w = TabWriter(out, 1, 8, 4, " ")
    w.write("ID\tTIMESTAMP\t\n")
    w.write(f"{metric.id}\t{go_time(metric.timestamp)}\t\n\n")
    w.write("METRIC\tVALUE\t\n")
    if kind == _V1_METRICS:
        from pycontainerd.api.types.cgroups.v1 import metrics_pb2 as v1

        m1 = parse_message(v1.Metrics, metric.data.value)
        if m1.HasField("memory"):
            w.write(f"memory.usage_in_bytes\t{m1.memory.usage.usage}\t\n")
            w.write(f"memory.limit_in_bytes\t{m1.memory.usage.limit}\t\n")
            w.write(f"memory.stat.cache\t{m1.memory.total_cache}\t\n")
        if m1.HasField("cpu"):
            per_cpu = " ".join(str(v) for v in m1.cpu.usage.per_cpu)
            w.write(f"cpuacct.usage\t{m1.cpu.usage.total}\t\n")
            w.write(f"cpuacct.usage_percpu\t[{per_cpu}]\t\n")
        if m1.HasField("pids"):
            w.write(f"pids.current\t{m1.pids.current}\t\n")
            w.write(f"pids.limit\t{m1.pids.limit}\t\n")
    elif kind == _V2_METRICS:
        from pycontainerd.api.types.cgroups.v2 import metrics_pb2 as v2

        m2 = parse_message(v2.Metrics, metric.data.value)
        if m2.HasField("pids"):
            w.write(f"pids.current\t{m2.pids.current}\t\n")
            w.write(f"pids.limit\t{m2.pids.limit}\t\n")
        if m2.HasField("cpu"):
            for name in (
                "usage_usec",
                "user_usec",
                "system_usec",
                "nr_periods",
                "nr_throttled",
                "throttled_usec",
            ):
                w.write(f"cpu.{name}\t{getattr(m2.cpu, name)}\t\n")
        if m2.HasField("memory"):
            for name in ("usage", "usage_limit", "swap_usage", "swap_limit"):
                w.write(f"memory.{name}\t{getattr(m2.memory, name)}\t\n")
    else:
        raise UsageError(_NOT_CGROUPS)
    w.flush()


def metrics_document(metric: Metric) -> dict[str, Any]:
    """The sample's cgroup metrics as the nested dict ``--format json`` prints.

    Raises:
        UsageError: the sample holds no cgroup metrics (upstream's text).
    """
    if metric.data is None:
        raise UsageError(_NOT_CGROUPS)
    kind = metric.data.type_url.rpartition("/")[2]
    if kind == _V1_METRICS:
        return cgroup_v1_metrics(metric.data.value)
    if kind == _V2_METRICS:
        return cgroup_v2_metrics(metric.data.value)
    raise UsageError(_NOT_CGROUPS)
