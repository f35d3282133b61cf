"""Hand-encoded messages match the generated protobuf classes."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from pycontainerd.api.runtime.task.v2 import shim_pb2
from pycontainerd.api.ttrpc.ttrpc_pb2 import Request, Response
from pycontainerd.runtime.shim import cgroups, wire

if TYPE_CHECKING:
    from pathlib import Path


def test_delete_response_decodes() -> None:
    msg = shim_pb2.DeleteResponse()
    msg.ParseFromString(wire.delete_response(4242, 137, 1700000000.25))
    assert (msg.pid, msg.exit_status) == (4242, 137)
    assert (msg.exited_at.seconds, msg.exited_at.nanos) == (1700000000, 250_000_000)


def test_ttrpc_request_frame_decodes() -> None:
    frame = wire.ttrpc_request(7, "svc.S", "M", b"payload")
    length = int.from_bytes(frame[:4], "big")
    assert int.from_bytes(frame[4:8], "big") == 7
    assert frame[8] == 1
    req = Request()
    req.ParseFromString(frame[10 : 10 + length])
    assert (req.service, req.method, req.payload) == ("svc.S", "M", b"payload")


def test_response_status_and_payload() -> None:
    ok = Response(payload=b"1234").SerializeToString()
    assert wire.response_ok(ok)
    assert wire.response_payload(ok) == b"1234"
    bad = Response()
    bad.status.code = 5
    bad.status.message = "nope"
    assert not wire.response_ok(bad.SerializeToString())
    assert wire.response_ok(b"")


def test_read_response_over_a_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        body = Response(payload=b"x").SerializeToString()
        b.sendall(len(body).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([2, 0]) + body)
        assert wire.read_response(a, 3) == body


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_v1_metrics_from_a_cgroup_tree(tmp_path: Path) -> None:
    from pycontainerd.api.types.cgroups.v1 import metrics_pb2

    _write(
        tmp_path,
        {
            "pids/c1/pids.current": "3\n",
            "pids/c1/pids.max": "max\n",
            "cpuacct/c1/cpuacct.usage": "500\n",
            "cpuacct/c1/cpuacct.usage_percpu": "200 300 \n",
            "cpu/c1/cpu.stat": "nr_periods 4\nnr_throttled 2\nthrottled_time 99\n",
            "memory/c1/memory.stat": "cache 7\npgpgin 11\nhierarchical_memsw_limit 12\n"
            "total_pgmajfault 13\nnot_a_field 5\n",
            "memory/c1/memory.usage_in_bytes": "777\n",
            "memory/c1/memory.limit_in_bytes": f"{1 << 30}\n",
        },
    )
    type_url, data = cgroups.metrics("/c1", str(tmp_path))
    assert type_url == "io.containerd.cgroups.v1.Metrics"
    m = metrics_pb2.Metrics.FromString(data)
    assert (m.pids.current, m.pids.limit) == (3, 0)
    assert (m.cpu.usage.total, list(m.cpu.usage.per_cpu)) == (500, [200, 300])
    assert (m.cpu.throttling.periods, m.cpu.throttling.throttled_time) == (4, 99)
    assert (m.memory.cache, m.memory.pg_pg_in) == (7, 11)
    assert (m.memory.hierarchical_swap_limit, m.memory.total_pg_maj_fault) == (12, 13)
    assert (m.memory.usage.usage, m.memory.usage.limit) == (777, 1 << 30)


def test_v2_metrics_from_a_cgroup_tree(tmp_path: Path) -> None:
    from pycontainerd.api.types.cgroups.v2 import metrics_pb2

    _write(
        tmp_path,
        {
            "cgroup.controllers": "cpu memory pids\n",
            "c1/pids.current": "2\n",
            "c1/pids.max": "64\n",
            "c1/cpu.stat": "usage_usec 10\nuser_usec 6\nsystem_usec 4\nnr_bursts 1\n",
            "c1/memory.stat": "anon 100\nfile 200\nworkingset_refault_anon 3\n",
            "c1/memory.current": "300\n",
            "c1/memory.max": "max\n",
        },
    )
    type_url, data = cgroups.metrics("/c1", str(tmp_path))
    assert type_url == "io.containerd.cgroups.v2.Metrics"
    m = metrics_pb2.Metrics.FromString(data)
    assert (m.pids.current, m.pids.limit) == (2, 64)
    assert (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.nr_bursts) == (10, 6, 1)
    assert (m.memory.anon, m.memory.file, m.memory.workingset_refault_anon) == (100, 200, 3)
    assert (m.memory.usage, m.memory.usage_limit) == (300, 0)


def test_metrics_of_a_missing_cgroup(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        cgroups.metrics("/gone", str(tmp_path))


def test_shim_cgroup_is_read_from_runc_options_in_an_any() -> None:
    from google.protobuf import any_pb2

    from pycontainerd.api.types.runc.options import oci_pb2

    opts = oci_pb2.Options(binary_name="runc", shim_cgroup="/pods/shim", io_uid=7, root="/r")
    wrapped = any_pb2.Any(type_url=wire.RUNC_OPTIONS, value=opts.SerializeToString())
    assert wire.shim_cgroup(wrapped.SerializeToString()) == "/pods/shim"
    other = any_pb2.Any(type_url="other.Options", value=opts.SerializeToString())
    assert wire.shim_cgroup(other.SerializeToString()) == ""
    assert wire.shim_cgroup(b"") == ""
    assert wire.shim_cgroup(b"\x0a\xff") == ""  # truncated: no options, no crash
    fields = wire.fields(opts.SerializeToString())
    assert (fields[6], fields[4], fields[7]) == (b"runc", 7, b"/r")
