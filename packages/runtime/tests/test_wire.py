"""Hand-encoded messages match the generated protobuf classes."""

from __future__ import annotations

import socket

from pycontainerd.api.runtime.task.v2 import shim_pb2
from pycontainerd.api.ttrpc.ttrpc_pb2 import Request, Response
from pycontainerd.runtime.shim import cgroups, wire


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


def test_v1_metrics_field_numbers(tmp_path: object) -> None:
    # Decode with a descriptor built from the upstream field numbers.
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(name="m1.proto", package="t1", syntax="proto3")
    pids = fdp.message_type.add(name="PidsStat")
    pids.field.add(name="current", number=1, type=4, label=1)
    pids.field.add(name="limit", number=2, type=4, label=1)
    metrics = fdp.message_type.add(name="Metrics")
    metrics.field.add(name="pids", number=2, type=11, label=1, type_name=".t1.PidsStat")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("t1.Metrics"))
    data = cgroups._msg((2, cgroups._msg((1, 3), (2, 10))))
    m = cls()
    m.ParseFromString(data)
    assert (m.pids.current, m.pids.limit) == (3, 10)  # type: ignore[attr-defined]


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
