"""The sans-IO parts of the streaming server: SPDY and WebSocket codecs, tokens, remotecommand."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib

import pytest

from pycontainerd.cri.streaming import remotecommand as rc
from pycontainerd.cri.streaming import spdy, websocket
from pycontainerd.cri.streaming.http import BadRequestError, parse_request, response
from pycontainerd.cri.streaming.tokens import TokenStore, TokenStoreFullError

# -- SPDY ---------------------------------------------------------------------------


def test_spdy3_dictionary_is_the_published_one() -> None:
    # 1423 bytes; digest of the dictionary of the SPDY/3 draft (section 2.6.10.1).
    assert len(spdy.DICTIONARY) == 1423
    assert (
        hashlib.sha256(spdy.DICTIONARY).hexdigest()
        == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )


def test_header_blocks_share_one_zlib_stream_per_direction() -> None:
    comp = spdy.HeaderCompressor()
    parser = spdy.FrameParser()
    wire = b"".join(
        spdy.encode_syn_stream(comp, sid, {"streamtype": [kind], "port": ["80", "81"]})
        for sid, kind in ((1, "error"), (3, "stdout"), (5, "stdin"))
    )
    frames = parser.feed(wire)
    assert [f.headers["streamtype"] for f in frames if isinstance(f, spdy.SynStream)] == [
        ["error"],
        ["stdout"],
        ["stdin"],
    ]
    assert frames[0].headers["port"] == ["80", "81"]  # type: ignore[union-attr]
    # The second block refers back into the first: a fresh decompressor cannot read it.
    first = 8 + (struct.unpack_from(">I", wire, 4)[0] & 0xFFFFFF)
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameParser().feed(wire[first:])


def test_header_block_uses_the_dictionary() -> None:
    block = spdy.HeaderCompressor().compress({"content-type": ["text/plain"]})
    with pytest.raises(zlib.error):
        zlib.decompress(block)  # needs the dictionary
    d = zlib.decompressobj(zdict=spdy.DICTIONARY)
    raw = d.decompress(block)
    assert spdy.parse_header_block(raw) == {"content-type": ["text/plain"]}


def test_frames_round_trip_in_any_chunking() -> None:
    comp = spdy.HeaderCompressor()
    wire = (
        spdy.encode_syn_stream(comp, 1, {"streamtype": ["error"]}, fin=True)
        + spdy.encode_syn_reply(comp, 1, {})
        + spdy.encode_data(1, b"x" * 70000, fin=True)
        + spdy.encode_rst_stream(3, spdy.RST_CANCEL)
        + spdy.encode_settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20})
        + spdy.encode_ping(7)
        + spdy.encode_goaway(5, spdy.GOAWAY_OK)
        + spdy.encode_window_update(1, 1000)
    )
    parser = spdy.FrameParser()
    frames: list[spdy.Frame] = []
    for i in range(0, len(wire), 7):
        frames += parser.feed(wire[i : i + 7])
    assert frames == [
        spdy.SynStream(1, 0, 0, {"streamtype": ["error"]}, fin=True, unidirectional=False),
        spdy.SynReply(1, {}, fin=False),
        spdy.DataFrame(1, b"x" * 70000, fin=True),
        spdy.RstStream(3, spdy.RST_CANCEL),
        spdy.Settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 1 << 20}),
        spdy.Ping(7),
        spdy.GoAway(5, spdy.GOAWAY_OK),
        spdy.WindowUpdate(1, 1000),
    ]


def test_unknown_control_types_are_ignored_not_fatal() -> None:
    frame = struct.pack(">HHI", 0x8003, 0x00FE, 2) + b"ab"
    assert spdy.FrameParser().feed(frame) == [spdy.UnknownControl(0xFE)]


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1", "version"),
        (struct.pack(">HHI", 0x8003, spdy.RST_STREAM, 4) + b"\0\0\0\1", "length"),
        (struct.pack(">HHI", 0x8003, spdy.WINDOW_UPDATE, 8) + b"\0\0\0\1\0\0\0\0", "zero delta"),
        (struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, 10) + bytes(10), "stream id 0"),
        (struct.pack(">HHI", 0x8003, spdy.SETTINGS, 4) + b"\0\0\0\5", "length"),
    ],
)
def test_malformed_control_frames_raise(wire: bytes, why: str) -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameParser().feed(wire)
    assert why


def test_oversized_data_frame_is_refused_before_buffering() -> None:
    parser = spdy.FrameParser(max_data_length=1024)
    with pytest.raises(spdy.ProtocolError, match="exceeds"):
        parser.feed(struct.pack(">II", 1, 4096))


def test_header_block_rejects_upper_case_and_duplicates() -> None:
    def block(*pairs: tuple[bytes, bytes]) -> bytes:
        out = struct.pack(">I", len(pairs))
        for k, v in pairs:
            out += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
        return out

    assert spdy.parse_header_block(block((b"a", b"1\x002"))) == {"a": ["1", "2"]}
    with pytest.raises(spdy.ProtocolError, match="lower case"):
        spdy.parse_header_block(block((b"A", b"1")))
    with pytest.raises(spdy.ProtocolError, match="duplicate"):
        spdy.parse_header_block(block((b"a", b"1"), (b"a", b"2")))
    with pytest.raises(spdy.ProtocolError, match="truncated"):
        spdy.parse_header_block(block((b"a", b"1"))[:-1])


# -- WebSocket ----------------------------------------------------------------------


def test_accept_key_of_rfc6455_example() -> None:
    assert websocket.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert websocket.valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not websocket.valid_key("short")


def test_fragmented_message_with_interleaved_ping() -> None:
    key = b"\x01\x02\x03\x04"
    wire = (
        websocket.encode_frame(websocket.OP_TEXT, b"hel", fin=False, mask_key=key)
        + websocket.encode_frame(websocket.OP_PING, b"p", mask_key=key)
        + websocket.encode_frame(websocket.OP_CONT, b"lo", mask_key=key)
    )
    parser = websocket.FrameParser()
    got: list[websocket.Message] = []
    for b in wire:
        got += parser.feed(bytes([b]))
    assert got == [
        websocket.Message(websocket.OP_PING, b"p"),
        websocket.Message(websocket.OP_TEXT, b"hello"),
    ]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_length_encodings(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = websocket.encode_frame(websocket.OP_BINARY, data, mask_key=b"abcd")
    assert websocket.FrameParser().feed(frame) == [websocket.Message(websocket.OP_BINARY, data)]
    unmasked = websocket.encode_frame(websocket.OP_BINARY, data)
    assert websocket.FrameParser(require_mask=False).feed(unmasked)[0].data == data


def test_message_size_limit_gives_1009() -> None:
    parser = websocket.FrameParser(max_message=10)
    with pytest.raises(websocket.ProtocolError) as e:
        parser.feed(websocket.encode_frame(websocket.OP_BINARY, b"x" * 11, mask_key=b"abcd"))
    assert e.value.code == websocket.CLOSE_TOO_BIG


def test_invalid_utf8_text_gives_1007() -> None:
    with pytest.raises(websocket.ProtocolError) as e:
        websocket.FrameParser().feed(
            websocket.encode_frame(websocket.OP_TEXT, b"\xff", mask_key=b"abcd")
        )
    assert e.value.code == websocket.CLOSE_INVALID_DATA


def test_close_frame_code() -> None:
    frame = websocket.encode_close(websocket.CLOSE_GOING_AWAY, "bye", mask_key=b"abcd")
    (msg,) = websocket.FrameParser().feed(frame)
    assert msg.close_code == websocket.CLOSE_GOING_AWAY
    assert msg.data[2:] == b"bye"


# -- remotecommand --------------------------------------------------------------------


def test_status_messages_by_protocol() -> None:
    assert json.loads(rc.exit_status_message(rc.SPDY_V4, 0, None)) == {
        "metadata": {},
        "status": "Success",
    }
    failure = json.loads(rc.exit_status_message(rc.WS_V5, 7, None))
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"]["causes"] == [{"reason": "ExitCode", "message": "7"}]
    assert rc.parse_exit_status(rc.exit_status_message(rc.WS_V4, 7, None)) == 7
    assert rc.exit_status_message(rc.SPDY_V2, 0, None) == b""
    assert rc.exit_status_message(rc.SPDY_V1, None, "boom") == b"boom"
    with pytest.raises(ValueError, match="boom"):
        rc.parse_exit_status(rc.exit_status_message(rc.SPDY_V4, None, "boom"))


def test_resize_decoder_handles_any_chunking() -> None:
    wire = b'{"Width":80,"Height":24}{"Width":100,"Height":50}\n{"Width":1,"Height":2}'
    dec = rc.ResizeDecoder()
    got: list[rc.TerminalSize] = []
    for b in wire:
        got += dec.feed(bytes([b]))
    assert got == [rc.TerminalSize(80, 24), rc.TerminalSize(100, 50), rc.TerminalSize(1, 2)]


# -- tokens and HTTP ----------------------------------------------------------------


def test_tokens_are_single_use_and_expire() -> None:
    now = [0.0]
    store: TokenStore[str] = TokenStore(ttl=60, clock=lambda: now[0])
    a, b = store.insert("a"), store.insert("b")
    assert a != b
    assert store.consume(a) == "a"
    assert store.consume(a) is None
    now[0] = 60.0
    assert store.consume(b) is None
    assert len(store) == 0


def test_token_store_is_bounded() -> None:
    store: TokenStore[int] = TokenStore(ttl=60, max_pending=2)
    store.insert(1)
    store.insert(2)
    with pytest.raises(TokenStoreFullError):
        store.insert(3)


def test_request_head_parsing() -> None:
    req = parse_request(
        b"POST /exec/abc?port=1&port=2 HTTP/1.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        b"x-stream-protocol-version: channel.k8s.io\r\nConnection: keep-alive, Upgrade\r\n\r\n"
    )
    assert (req.method, req.path, req.query) == ("POST", "/exec/abc", {"port": ["1", "2"]})
    assert req.tokens("x-stream-protocol-version") == ["v4.channel.k8s.io", "channel.k8s.io"]
    assert req.tokens("connection") == ["keep-alive", "Upgrade"]
    with pytest.raises(BadRequestError):
        parse_request(b"GARBAGE\r\n\r\n")
    with pytest.raises(BadRequestError):
        parse_request(b"GET / HTTP/1.1\r\nno colon\r\n\r\n")


def test_error_response_has_length_and_closes() -> None:
    text = response(404, body="404 page not found").decode()
    assert text.startswith("HTTP/1.1 404 Not Found\r\n")
    assert "Content-Length: 18\r\n" in text
    assert text.endswith("\r\n\r\n404 page not found")
