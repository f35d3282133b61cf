"""h2conn's sans-I/O HTTP/2 connection, driven with bytes alone (no socket, no event loop).

Each test feeds a client's bytes to :class:`H2Connection` and checks the
events it reports and the frames it queues for the client.
"""

from __future__ import annotations

import struct

from hpack import Encoder

from pycontainerd.api import h2conn
from pycontainerd.api.h2conn import (
    ACK,
    CONN_WINDOW,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOOD_STRIKES,
    FLOW_CONTROL_ERROR,
    GOAWAY,
    HEADERS,
    PING,
    PREFACE,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTINGS,
    SETTINGS_MAX_FRAME_SIZE,
    STREAM_WINDOW,
    WINDOW_UPDATE,
    ConnectionTerminated,
    H2Connection,
    RequestData,
    RequestHeaders,
    StreamEnded,
    StreamReset,
    frame,
)

Frame = tuple[int, int, int, bytes]


def frames(data: bytes) -> list[Frame]:
    """Split ``data`` into (type, flags, stream, payload) tuples."""
    out = []
    pos = 0
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 3], "big")
        kind, flags = data[pos + 3], data[pos + 4]
        sid = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        out.append((kind, flags, sid, data[pos + 9 : pos + 9 + length]))
        pos += 9 + length
    assert pos == len(data)
    return out


def settled() -> H2Connection:
    """A connection past the client's preface and SETTINGS, its output taken."""
    conn = H2Connection()
    assert conn.receive_data(PREFACE + frame(SETTINGS, 0, 0)) == []
    conn.data_to_send()
    return conn


def goaway_code(data: bytes) -> int:
    kinds = frames(data)
    assert kinds[-1][0] == GOAWAY
    return int(struct.unpack(">II", kinds[-1][3][:8])[1])


def test_preamble_advertises_settings_and_the_connection_window() -> None:
    (settings, update) = frames(H2Connection().preamble())
    assert settings[0] == SETTINGS
    assert settings[2] == 0
    assert update[:3] == (WINDOW_UPDATE, 0, 0)
    assert int.from_bytes(update[3], "big") == CONN_WINDOW - DEFAULT_WINDOW


def test_preface_and_settings_get_a_settings_ack() -> None:
    conn = H2Connection()
    assert conn.receive_data(PREFACE + frame(SETTINGS, 0, 0)) == []
    assert frames(conn.data_to_send()) == [(SETTINGS, ACK, 0, b"")]
    assert conn.data_to_send() == b""


def test_preface_split_over_reads_is_reassembled() -> None:
    conn = H2Connection()
    data = PREFACE + frame(SETTINGS, 0, 0)
    for i in range(len(data)):
        assert conn.receive_data(data[i : i + 1]) == []
    assert frames(conn.data_to_send()) == [(SETTINGS, ACK, 0, b"")]


def test_frames_split_anywhere_over_reads_give_the_same_events() -> None:
    # a read may end inside a frame's header or payload, or hold several frames
    block = Encoder().encode([(":method", "POST"), (":path", "/svc/Method")])
    padded = bytes([3]) + b"\x00\x00\x00\x00\x05hello" + b"\x00" * 3
    data = (
        frame(HEADERS, END_HEADERS, 1, block)
        + frame(h2conn.DATA, h2conn.PADDED, 1, padded)
        + frame(PING, 0, 0, b"12345678")
        + frame(h2conn.DATA, 0, 1, b"\x00\x00\x00\x00\x03abc")
        + frame(h2conn.DATA, END_STREAM, 1, b"")
    )
    whole = settled()
    expected = whole.receive_data(data)
    assert [type(e) for e in expected] == [RequestHeaders, RequestData, RequestData, StreamEnded]
    answer = whole.data_to_send()
    for size in (1, 2, 7, 9, 10, 31):
        conn = settled()
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        assert [e for piece in pieces for e in conn.receive_data(piece)] == expected, size
        assert conn.data_to_send() == answer
    for cut in range(1, len(data)):
        conn = settled()
        events = conn.receive_data(data[:cut]) + conn.receive_data(data[cut:])
        assert events == expected, cut
        assert conn.buf == bytearray()


def test_ping_gets_a_ping_ack_with_its_payload() -> None:
    conn = settled()
    conn.receive_data(frame(PING, 0, 0, b"12345678"))
    assert frames(conn.data_to_send()) == [(PING, ACK, 0, b"12345678")]


def test_max_frame_size_zero_is_a_protocol_error() -> None:
    conn = H2Connection()
    bad = struct.pack(">HI", SETTINGS_MAX_FRAME_SIZE, 0)
    events = conn.receive_data(PREFACE + frame(SETTINGS, 0, 0, bad))
    assert events == [ConnectionTerminated(PROTOCOL_ERROR, "invalid max frame size 0")]
    assert goaway_code(conn.data_to_send()) == PROTOCOL_ERROR
    assert conn.receive_data(frame(PING, 0, 0, b"12345678")) == []  # nothing more is read
    assert conn.data_to_send() == b""


def test_not_a_preface_is_a_protocol_error() -> None:
    conn = H2Connection()
    events = conn.receive_data(b"GET / HTTP/1.1\r\n\r\n" + b"x" * 20)
    assert [type(e) for e in events] == [ConnectionTerminated]
    assert goaway_code(conn.data_to_send()) == PROTOCOL_ERROR


def test_a_request_gives_headers_data_and_end_events() -> None:
    conn = settled()
    block = Encoder().encode([(":method", "POST"), (":path", "/svc/Method")])
    body = b"\x00\x00\x00\x00\x02hi"
    events = conn.receive_data(
        frame(HEADERS, END_HEADERS, 1, block) + frame(h2conn.DATA, END_STREAM, 1, body)
    )
    assert events == [
        RequestHeaders(1, [(":method", "POST"), (":path", "/svc/Method")], end_stream=False),
        RequestData(1, body),
        StreamEnded(1),
    ]
    assert conn.streams[1].held == len(body)
    assert conn.buffered == len(body)


def test_data_beyond_the_stream_window_resets_the_stream() -> None:
    conn = settled()
    conn.receive_data(frame(HEADERS, END_HEADERS, 1, Encoder().encode([(":path", "/a/b")])))
    conn.streams[1].recv_window = 3
    events = conn.receive_data(frame(h2conn.DATA, 0, 1, b"four"))
    assert events == [StreamReset(1, FLOW_CONTROL_ERROR, by_peer=False)]
    assert frames(conn.data_to_send()) == [
        (RST_STREAM, 0, 1, FLOW_CONTROL_ERROR.to_bytes(4, "big"))
    ]
    assert 1 not in conn.streams


def test_client_reset_is_reported() -> None:
    conn = settled()
    conn.receive_data(frame(HEADERS, END_HEADERS, 1, Encoder().encode([(":path", "/a/b")])))
    events = conn.receive_data(frame(RST_STREAM, 0, 1, (8).to_bytes(4, "big")))
    assert events == [StreamReset(1, h2conn.CANCEL, by_peer=True)]
    assert conn.streams == {}


def test_a_ping_flood_ends_in_enhance_your_calm() -> None:
    conn = settled()
    conn.receive_data(frame(PING, 0, 0, b"12345678") * (FLOOD_STRIKES + 1))
    out = conn.data_to_send()
    assert goaway_code(out) == ENHANCE_YOUR_CALM
    assert sum(1 for f in frames(out) if f[0] == PING) == FLOOD_STRIKES


def test_the_stream_window_is_advertised_in_settings() -> None:
    (settings, _) = frames(H2Connection().preamble())
    entries = dict(struct.iter_unpack(">HI", settings[3]))
    assert entries[h2conn.SETTINGS_INITIAL_WINDOW_SIZE] == STREAM_WINDOW
