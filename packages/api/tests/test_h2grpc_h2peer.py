"""h2grpc against python-hyper's ``h2`` client state machine, with hypothesis.

``h2`` enforces RFC 9113 on everything it receives: frame sizes, stream
states, flow control, HPACK. Hypothesis writes programs of concurrent calls
(unary, client, server and bidi streams with random sizes, metadata and
chunking), PINGs, SETTINGS changes (initial window, max frame size) and
resets; an ``h2`` client runs each against a real h2grpc server on a unix
socket. Every answer must be what the call asked for, ``h2`` must accept
every byte the server sends, and the connection must never end in a GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycontainerd.api import h2grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVICE = "pycontainerd.test.v1.Fuzz"
WAIT = 30.0


def pattern(n: int, seed: int) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


async def unary(request: bytes, context: Any) -> bytes:
    return request[::-1]


async def client_stream(requests: AsyncIterator[bytes], context: Any) -> bytes:
    return b"|".join([r async for r in requests])


async def server_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    n, size = (int(x) for x in request.split(b","))
    for i in range(n):
        yield pattern(size, i)


async def bidi(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for r in requests:
        yield r + b"!"


HANDLERS = grpc.method_handlers_generic_handler(
    SERVICE,
    {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    },
)


def frame_messages(messages: list[bytes]) -> bytes:
    return b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in messages)


def split_messages(data: bytes) -> list[bytes]:
    out = []
    while data:
        n = int.from_bytes(data[1:5], "big")
        out.append(data[5 : 5 + n])
        data = data[5 + n :]
    return out


@dataclass
class Call:
    method: str
    messages: list[bytes]
    expect: list[bytes]
    metadata: list[tuple[str, str]]
    chunk: int
    reset: bool = False
    pending: bytes = b""
    body: bytearray = field(default_factory=bytearray)
    status: str | None = None
    done: bool = False


SIZES = st.integers(min_value=0, max_value=70_000)
METADATA = st.lists(
    st.tuples(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(
            lambda s: "x-" + s
        ),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
    ),
    max_size=4,
)


CALLS = st.tuples(
    st.sampled_from(["Unary", "ClientStream", "ServerStream", "Bidi", "Reset"]),
    st.lists(SIZES, max_size=4),
    METADATA,
    st.integers(min_value=1, max_value=40_000),
)
"""(kind, message sizes, metadata, chunk): small to show; the bytes are made from them."""


def make_call(spec: tuple[str, list[int], list[tuple[str, str]], int]) -> Call:
    kind, sizes, metadata, chunk = spec
    if kind in ("Unary", "Reset"):
        m = pattern(sizes[0] if sizes else 0, 1)
        return Call("Unary", [m], [m[::-1]], metadata, chunk, reset=kind == "Reset")
    if kind == "ClientStream":
        ms = [pattern(n, i) for i, n in enumerate(sizes)]
        return Call(kind, ms, [b"|".join(ms)], metadata, chunk)
    if kind == "ServerStream":
        size = sizes[0] if sizes else 0
        n = len(sizes) + 2
        return Call(
            kind, [b"%d,%d" % (n, size)], [pattern(size, i) for i in range(n)], metadata, chunk
        )
    ms = [pattern(n, i) for i, n in enumerate(sizes)]
    return Call(kind, ms, [m + b"!" for m in ms], metadata, chunk)


PROGRAM = st.fixed_dictionaries(
    {
        "calls": st.lists(CALLS, min_size=1, max_size=6),
        "pings": st.integers(0, 5),
        "window": st.one_of(st.none(), st.integers(min_value=1024, max_value=1 << 20)),
        "max_frame": st.one_of(st.none(), st.integers(min_value=16_384, max_value=1 << 20)),
    }
)


async def run_program(path: str, program: dict[str, Any]) -> None:  # noqa: PLR0912
    reader, writer = await asyncio.open_unix_connection(path)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    changes: dict[h2.settings.SettingCodes | int, int] = {}
    if program["window"] is not None:
        changes[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = program["window"]
    if program["max_frame"] is not None:
        changes[h2.settings.SettingCodes.MAX_FRAME_SIZE] = program["max_frame"]
    if changes:
        conn.update_settings(changes)
    for i in range(program["pings"]):
        conn.ping(i.to_bytes(8, "big"))
    acks = 0
    # h2 applies our own SETTINGS changes to what it accepts only between two
    # reads, not between two frames of one read: the calls start after the acks.
    settings_acks = 0
    while settings_acks < (2 if changes else 1):
        writer.write(conn.data_to_send())
        data = await asyncio.wait_for(reader.read(1 << 16), WAIT)
        assert data, "the server closed the connection"
        for event in conn.receive_data(data):
            settings_acks += isinstance(event, h2.events.SettingsAcknowledged)
            acks += isinstance(event, h2.events.PingAckReceived)
    streams: dict[int, Call] = {}
    for spec in program["calls"]:
        call = make_call(spec)
        sid = conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", f"/{SERVICE}/{call.method}"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *call.metadata,
        ]
        conn.send_headers(sid, headers)
        call.pending = frame_messages(call.messages)
        streams[sid] = call
        if call.reset:
            conn.reset_stream(sid, 8)  # CANCEL
            call.done = True
    try:
        while not all(c.done for c in streams.values()) or acks < program["pings"]:
            for sid, call in streams.items():
                if call.done or call.pending is None:
                    continue
                while call.pending:
                    room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                    n = min(room, call.chunk, len(call.pending))
                    if n <= 0:
                        break
                    conn.send_data(sid, call.pending[:n])
                    call.pending = call.pending[n:]
                if not call.pending:
                    conn.end_stream(sid)
                    call.pending = None  # type: ignore[assignment]
            writer.write(conn.data_to_send())
            await writer.drain()
            data = await asyncio.wait_for(reader.read(1 << 16), WAIT)
            assert data, "the server closed the connection"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    call = streams[event.stream_id]
                    call.body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived):
                    fields = dict(event.headers)
                    if b"grpc-status" in fields:
                        streams[event.stream_id].status = fields[b"grpc-status"].decode()
                elif isinstance(event, h2.events.StreamEnded):
                    streams[event.stream_id].done = True
                elif isinstance(event, h2.events.StreamReset):
                    call = streams[event.stream_id]
                    assert call.reset or call.done, f"reset {event.error_code} of {call}"
                    call.done = True
                elif isinstance(event, h2.events.PingAckReceived):
                    acks += 1
                elif isinstance(event, h2.events.ConnectionTerminated):
                    msg = f"GOAWAY {event.error_code}: {event.additional_data!r}"
                    raise AssertionError(msg)
            writer.write(conn.data_to_send())
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    for call in streams.values():
        if call.reset:
            continue
        assert call.status == "0", call
        assert split_messages(bytes(call.body)) == call.expect


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(PROGRAM)
def test_h2_client_programs(program: dict[str, Any]) -> None:
    async def main() -> None:
        base = tempfile.mkdtemp(prefix="h2p", dir="/tmp")
        server = h2grpc.Server()
        server.add_generic_rpc_handlers((HANDLERS,))
        try:
            await server.listen_unix(f"{base}/s.sock")
            await run_program(f"{base}/s.sock", program)
        finally:
            await server.stop(None)
            shutil.rmtree(base, ignore_errors=True)

    asyncio.run(main())
