"""The few protobuf and ttrpc messages the ``start``/``delete`` paths need, by hand.

Loading protobuf's runtime and the generated modules costs more than the whole
``start`` of a shim that is already running, so these paths encode the handful
of messages they send themselves: ``containerd.task.v2.DeleteResponse`` on
stdout of ``delete``, and one ttrpc request frame (``ttrpc.Request``: service=1,
method=2, payload=3) to reserve a slot in a running shim. Field numbers follow
the protos in ``pycontainerd.api``; tests decode the bytes with the generated
classes to keep both in step.
"""

from __future__ import annotations

import struct
import time

from pycontainerd.api.varint import uvarint

# typing pulls in re: this module is on the start path, so no typing import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

__all__ = [
    "delete_response",
    "fields",
    "read_response",
    "shim_cgroup",
    "ttrpc_request",
]

RUNC_OPTIONS = "containerd.runc.v1.Options"
"""Type URL (suffix) of runc's options in an ``Any``."""
_SHIM_CGROUP_FIELD = 3  # containerd.runc.v1.Options.shim_cgroup

_HEADER = struct.Struct(">IIBB")
_TYPE_REQUEST = 1
_TYPE_RESPONSE = 2


def _read_uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            msg = "truncated varint"
            raise ValueError(msg)
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            msg = "varint too long"
            raise ValueError(msg)


def fields(data: bytes) -> dict[int, bytes | int]:
    """The fields of a protobuf message by number (the last one wins, as protobuf's).

    Varints come as ints, length-delimited fields as bytes; fixed-width ones are skipped.

    Raises:
        ValueError: the bytes are not a protobuf message.
    """
    out: dict[int, bytes | int] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_uvarint(data, pos)
        num, kind = key >> 3, key & 7
        if kind == 0:
            out[num], pos = _read_uvarint(data, pos)
        elif kind == 2:
            size, pos = _read_uvarint(data, pos)
            if pos + size > len(data):
                msg = "truncated field"
                raise ValueError(msg)
            out[num] = data[pos : pos + size]
            pos += size
        elif kind in {1, 5}:
            pos += 8 if kind == 1 else 4
        else:
            msg = f"unsupported wire type {kind}"
            raise ValueError(msg)
    return out


def shim_cgroup(options: bytes) -> str:
    """``shim_cgroup`` of runtime options (an ``Any`` holding runc's ``Options``), else ""."""
    try:
        any_fields = fields(options)
        type_url = any_fields.get(1, b"")
        value = any_fields.get(2, b"")
        if not isinstance(type_url, bytes) or not isinstance(value, bytes):
            return ""
        if not type_url.decode(errors="replace").endswith(RUNC_OPTIONS):
            return ""
        found = fields(value).get(_SHIM_CGROUP_FIELD, b"")
    except ValueError:
        return ""
    return found.decode(errors="replace") if isinstance(found, bytes) else ""


def _varint_field(num: int, value: int) -> bytes:
    return uvarint(num << 3) + uvarint(value) if value else b""


def _bytes_field(num: int, value: bytes) -> bytes:
    return uvarint(num << 3 | 2) + uvarint(len(value)) + value


def timestamp(ts: float) -> bytes:
    """A ``google.protobuf.Timestamp`` for the Unix time ``ts``."""
    seconds = int(ts)
    nanos = round((ts - seconds) * 1e9)
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return _varint_field(1, seconds) + _varint_field(2, nanos)


def delete_response(pid: int, exit_status: int, exited_at: float | None = None) -> bytes:
    """A marshalled ``DeleteResponse{pid, exit_status, exited_at}``."""
    ts = time.time() if exited_at is None else exited_at
    return _varint_field(1, pid) + _varint_field(2, exit_status) + _bytes_field(3, timestamp(ts))


def ttrpc_request(stream_id: int, service: str, method: str, payload: bytes) -> bytes:
    """One ttrpc request frame (header and ``ttrpc.Request``)."""
    body = (
        _bytes_field(1, service.encode())
        + _bytes_field(2, method.encode())
        + _bytes_field(3, payload)
    )
    return _HEADER.pack(len(body), stream_id, _TYPE_REQUEST, 0) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            msg = "ttrpc: connection closed"
            raise ConnectionError(msg)
        buf += chunk
    return bytes(buf)


def read_response(sock: socket.socket, stream_id: int) -> bytes:
    """Read one response frame for ``stream_id``; return its raw ``ttrpc.Response``.

    An empty body means success with an empty result.

    Raises:
        ConnectionError: the peer closed the connection or answered another stream.
    """
    length, sid, mtype, _ = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    body = _recv_exact(sock, length)
    if sid != stream_id or mtype != _TYPE_RESPONSE:
        msg = f"ttrpc: unexpected frame (stream {sid}, type {mtype})"
        raise ConnectionError(msg)
    return body


def response_payload(body: bytes) -> bytes:
    """The result bytes (field 2) of a raw successful ``ttrpc.Response``."""
    if len(body) >= 2 and body[0] == 0x12:
        shift = 0
        length = 0
        pos = 1
        while True:
            b = body[pos]
            length |= (b & 0x7F) << shift
            pos += 1
            if not b & 0x80:
                break
            shift += 7
        return body[pos : pos + length]
    return b""


def response_ok(body: bytes) -> bool:
    """Whether a raw ``ttrpc.Response`` carries no status (or code 0).

    The status is field 1; a success response has none (Go leaves it nil).
    """
    return not body or body[0] != 0x0A or body[1] == 0
