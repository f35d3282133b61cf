"""The daemon's gRPC socket under attack: raw HTTP/2 clients as an attacker writes them.

Each test runs one attack class (the HTTP/2 CVEs, HPACK bombs, floods,
exhaustion, slowloris) or breaks one RFC 9113 rule, over and over from a
thread, while the Go ``ctr version`` runs against the same daemon. It asserts
what the attacking connection sees (a GOAWAY or RST_STREAM with the right
error code), that ``ctr version`` answers within a second each time during the
attack, and that the daemon's resident memory grows by less than
``RSS_BOUND``. The daemon runs with small limits so the attacks end quickly.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import struct
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Final

import pytest
from hpack import Encoder

from pycontainerd.core.testing import STORE_PLUGINS
from pycontainerd.daemon import testing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.system

MODULES: Final = STORE_PLUGINS
MAX_STREAMS: Final = 50
HANDSHAKE: Final = 2
IDLE: Final = 3
CONFIG: Final = f"""version = 2
[grpc]
  max_concurrent_streams = {MAX_STREAMS}
  handshake_timeout = {HANDSHAKE}
  idle_timeout = {IDLE}
"""
RSS_BOUND: Final = 96 << 20
"""What one attack may add to the daemon's resident memory (the fixed server used GBs)."""

PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = 0, 1, 2, 3, 4, 5, 6, 7
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM, END_HEADERS, PADDED, ACK = 0x1, 0x4, 0x8, 0x1
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR, STREAM_CLOSED = 0x0, 0x1, 0x3, 0x5
FRAME_SIZE_ERROR, REFUSED_STREAM, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x6, 0x7, 0x9, 0xB
SETTINGS_ENABLE_PUSH, SETTINGS_MAX_CONCURRENT_STREAMS, SETTINGS_INITIAL_WINDOW_SIZE = 2, 3, 4
SETTINGS_MAX_FRAME_SIZE = 5

VERSION: Final = "/containerd.services.version.v1.Version/Version"
INFO: Final = "/containerd.services.content.v1.Content/Info"
PLUGINS: Final = "/containerd.services.introspection.v1.Introspection/Plugins"

Outcome = tuple[str, int]
"""What the attacker saw: ``("goaway", code)``, ``("rst", code)``, ``("status", grpc code)``."""


# -- the attacker -------------------------------------------------------------


class Raw:
    """A blocking HTTP/2 client over a unix socket that sends whatever it is told."""

    def __init__(self, address: str, *, timeout: float = 15.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.encoder = Encoder()
        self.rbuf = b""

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, data: bytes) -> bool:
        """Write ``data``; False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    @staticmethod
    def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
        return (
            struct.pack(">I", len(payload))[1:]
            + bytes((kind, flags))
            + struct.pack(">I", sid)
            + payload
        )

    def start(self, *settings: tuple[int, int]) -> None:
        body = b"".join(struct.pack(">HI", k, v) for k, v in settings)
        self.send(PREFACE + self.frame(SETTINGS, 0, 0, body))

    def block(self, path: str, *extra: tuple[str, str]) -> bytes:
        return bytes(
            self.encoder.encode(
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":path", path),
                    (":authority", "localhost"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("containerd-namespace", "default"),
                    *extra,
                ]
            )
        )

    def headers(self, sid: int, path: str, *extra: tuple[str, str], end: bool = False) -> bytes:
        flags = END_HEADERS | (END_STREAM if end else 0)
        return self.frame(HEADERS, flags, sid, self.block(path, *extra))

    def read_frame(self) -> tuple[int, int, int, bytes] | None:
        while True:
            if len(self.rbuf) >= 9:
                length = int.from_bytes(self.rbuf[:3], "big")
                if len(self.rbuf) >= 9 + length:
                    head, self.rbuf = self.rbuf[:9], self.rbuf[9:]
                    payload, self.rbuf = self.rbuf[:length], self.rbuf[length:]
                    sid = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                    return head[3], head[4], sid, payload
            try:
                chunk = self.sock.recv(1 << 16)
            except OSError:
                return None
            if not chunk:
                return None
            self.rbuf += chunk

    def outcome(self, sid: int | None = None) -> Outcome:
        """Read until a GOAWAY, an RST_STREAM on ``sid``, or ``sid``'s gRPC status."""
        while True:
            frame = self.read_frame()
            if frame is None:
                return ("closed", -1)
            kind, _, stream, payload = frame
            if kind == GOAWAY:
                return ("goaway", int.from_bytes(payload[4:8], "big"))
            if sid is not None and stream == sid:
                if kind == RST_STREAM:
                    return ("rst", int.from_bytes(payload, "big"))
                if kind == HEADERS and b"grpc-status" in payload:
                    # Our server sends trailers as literals: the status digit follows the name.
                    at = payload.index(b"grpc-status") + len(b"grpc-status") + 1
                    end = at + payload[at - 1]
                    return ("status", int(payload[at:end]))


@contextlib.contextmanager
def connected(address: str) -> Iterator[Raw]:
    client = Raw(address)
    try:
        yield client
    finally:
        client.close()


# -- the daemon and the witness -------------------------------------------------


@pytest.fixture(scope="module")
def daemon() -> Iterator[testing.Daemon]:
    testing.require_binary(testing.CTR)
    with testing.short_tempdir("pcdatk") as base:
        d = testing.Daemon(base, config=CONFIG, env=testing.daemon_env(MODULES))
        with d:
            yield d


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    msg = "no VmRSS"
    raise AssertionError(msg)


def ctr_version(address: str) -> None:
    """The Go ``ctr version`` must answer within a second (its own ``--timeout``)."""
    res = subprocess.run(
        [testing.CTR, "--timeout", "1s", "-a", address, "version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 0, f"ctr version during the attack: {res.stderr}"
    assert "Server:" in res.stdout


def under_attack(
    d: testing.Daemon, attack: Callable[[str], Outcome], *, witnesses: int = 3
) -> list[Outcome]:
    """Run ``attack`` in a loop from a thread while ``ctr version`` answers; its outcomes.

    Asserts the witnesses and the memory bound; the caller checks the outcomes.
    """
    assert d.proc is not None
    pid = d.proc.pid
    before = rss(pid)
    peak = before
    outcomes: list[Outcome] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def loop() -> None:
        try:
            while True:
                outcomes.append(attack(d.address))
                if stop.is_set():
                    return
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    with contextlib.ExitStack() as stack:
        stack.enter_context(testing.load_exclusion(exclusive=False))
        thread.start()
        stack.callback(thread.join, 120)
        stack.callback(stop.set)
        # The witnesses start once the attack has run at least one round.
        testing.wait_for(lambda: bool(outcomes) or bool(errors), 60, "the first attack round")
        for _ in range(witnesses):
            ctr_version(d.address)
            peak = max(peak, rss(pid))
    assert not errors, errors
    peak = max(peak, rss(pid))
    assert peak - before < RSS_BOUND, f"daemon RSS grew by {(peak - before) >> 20} MiB"
    assert "Fatal error" not in d.log()
    assert "Traceback" not in d.log()
    return outcomes


def expect(outcomes: list[Outcome], want: Outcome) -> None:
    assert outcomes
    assert set(outcomes) == {want}, outcomes


# -- attack classes --------------------------------------------------------------


def ping_flood(address: str) -> Outcome:
    """CVE-2019-9512: PINGs, never reading the acks."""
    with connected(address) as c:
        c.start()
        c.send(c.frame(PING, 0, 0, b"12345678") * 5000)
        return c.outcome()


def settings_flood(address: str) -> Outcome:
    """CVE-2019-9515: SETTINGS frames, never reading the acks."""
    with connected(address) as c:
        c.start()
        c.send(c.frame(SETTINGS, 0, 0, struct.pack(">HI", SETTINGS_ENABLE_PUSH, 0)) * 5000)
        return c.outcome()


def reset_flood(address: str) -> Outcome:
    """CVE-2019-9514: requests that each draw an RST_STREAM, never read."""
    with connected(address) as c:
        c.start()
        bad = c.frame(HEADERS, END_HEADERS | END_STREAM, 1, c.block(VERSION, ("", "x")))
        frames = [bad]
        frames += [
            c.frame(HEADERS, END_HEADERS | END_STREAM, sid, b"\xbe")  # the same bad field again
            for sid in range(3, 6001, 2)
        ]
        c.send(b"".join(frames))
        return c.outcome()


def empty_frame_flood(address: str) -> Outcome:
    """CVE-2019-9518: empty DATA frames on an open stream."""
    with connected(address) as c:
        c.start()
        c.send(c.headers(1, VERSION) + c.frame(DATA, 0, 1) * 5000)
        return c.outcome()


def data_dribble(address: str) -> Outcome:
    """CVE-2019-9511/9517: a zero window opened a byte at a time, asking for a large answer."""
    with connected(address) as c:
        c.start((SETTINGS_INITIAL_WINDOW_SIZE, 0))
        c.send(c.headers(1, PLUGINS) + c.frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x00"))
        # The answer's HEADERS come once its writer waits for the closed window.
        while (frame := c.read_frame()) is not None and not (frame[0] == HEADERS and frame[2] == 1):
            pass
        c.send(c.frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 1)) * 3000)
        return c.outcome()


def rapid_reset(address: str) -> Outcome:
    """CVE-2023-44487: streams opened and reset at once."""
    with connected(address) as c:
        c.start()
        frames = []
        for sid in range(1, 6001, 2):
            frames.append(c.headers(sid, VERSION))
            frames.append(c.frame(RST_STREAM, 0, sid, struct.pack(">I", 8)))
        c.send(b"".join(frames))
        return c.outcome()


def continuation_flood(address: str) -> Outcome:
    """CONTINUATION frames that never end a header block (CVE-2024-27316 class)."""
    with connected(address) as c:
        c.start()
        c.send(c.frame(HEADERS, 0, 1, c.block(VERSION)))
        chunk = c.frame(CONTINUATION, 0, 1, b"\x00" * (1 << 14))
        for _ in range(1100):  # 17 MiB, past the 16 MiB header list
            if not c.send(chunk):
                break
        return c.outcome()


def empty_continuation_flood(address: str) -> Outcome:
    with connected(address) as c:
        c.start()
        c.send(c.frame(HEADERS, 0, 1, c.block(VERSION)) + c.frame(CONTINUATION, 0, 1) * 5000)
        return c.outcome()


def hpack_bomb(address: str) -> Outcome:
    """One 4000-byte literal into the dynamic table, then 5 MiB of one-byte references to it."""
    with connected(address) as c:
        c.start()
        literal = b"\x40\x01x" + b"\x7f" + _hpack_int(4000 - 127) + b"v" * 4000
        block = c.block(VERSION) + literal
        index = 62 + 0  # the newest dynamic entry
        refs = bytes((0x80 | index,)) * (5 << 20)
        c.send(c.frame(HEADERS, 0, 1, block))
        for off in range(0, len(refs), 1 << 20):
            end = off + (1 << 20) >= len(refs)
            flags = END_HEADERS | END_STREAM if end else 0
            if not c.send(c.frame(CONTINUATION, flags, 1, refs[off : off + (1 << 20)])):
                break
        return c.outcome()


def _hpack_int(rest: int) -> bytes:
    out = bytearray()
    while rest >= 0x80:
        out.append((rest & 0x7F) | 0x80)
        rest >>= 7
    out.append(rest)
    return bytes(out)


def stream_window_overrun(address: str) -> Outcome:
    """More DATA on one stream than its advertised 4 MiB window."""
    with connected(address) as c:
        c.start()
        prefix = b"\x00" + (8 << 20).to_bytes(4, "big")
        body = prefix + b"\x00" * ((5 << 20) - len(prefix))
        frames = [c.headers(1, INFO)]
        frames += [
            c.frame(DATA, 0, 1, body[off : off + (1 << 20)]) for off in range(0, len(body), 1 << 20)
        ]
        c.send(b"".join(frames))
        return c.outcome(1)


def connection_window_overrun(address: str) -> Outcome:
    """Buffered requests filling the 32 MiB connection window, then more."""
    with connected(address) as c:
        c.start()
        almost = (4 << 20) - 1
        message = b"\x00" + (4 << 20).to_bytes(4, "big") + b"\x00" * (almost - 5)
        for sid in range(1, 21, 2):  # 10 streams x 4 MiB > 32 MiB
            frames = [c.headers(sid, INFO)]
            frames += [
                c.frame(DATA, 0, sid, message[off : off + (1 << 20)])
                for off in range(0, len(message), 1 << 20)
            ]
            if not c.send(b"".join(frames)):
                break
        return c.outcome()


def stream_exhaustion(address: str) -> Outcome:
    """One stream more than SETTINGS_MAX_CONCURRENT_STREAMS, all waiting for their requests."""
    with connected(address) as c:
        c.start()
        first = c.read_frame()
        assert first is not None
        assert first[0] == SETTINGS
        advertised = dict(
            struct.unpack_from(">HI", first[3], off) for off in range(0, len(first[3]), 6)
        )
        assert advertised[SETTINGS_MAX_CONCURRENT_STREAMS] == MAX_STREAMS
        last = 2 * MAX_STREAMS + 1
        c.send(b"".join(c.headers(sid, VERSION) for sid in range(1, last + 1, 2)))
        return c.outcome(last)


@pytest.mark.parametrize(
    ("attack", "want"),
    [
        (ping_flood, ("goaway", ENHANCE_YOUR_CALM)),
        (settings_flood, ("goaway", ENHANCE_YOUR_CALM)),
        (reset_flood, ("goaway", ENHANCE_YOUR_CALM)),
        (empty_frame_flood, ("goaway", ENHANCE_YOUR_CALM)),
        (data_dribble, ("goaway", ENHANCE_YOUR_CALM)),
        (rapid_reset, ("goaway", ENHANCE_YOUR_CALM)),
        (continuation_flood, ("goaway", PROTOCOL_ERROR)),
        (empty_continuation_flood, ("goaway", ENHANCE_YOUR_CALM)),
        (hpack_bomb, ("goaway", COMPRESSION_ERROR)),
        (stream_window_overrun, ("rst", FLOW_CONTROL_ERROR)),
        (connection_window_overrun, ("goaway", FLOW_CONTROL_ERROR)),
        (stream_exhaustion, ("rst", REFUSED_STREAM)),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_attack(daemon: testing.Daemon, attack: Callable[[str], Outcome], want: Outcome) -> None:
    expect(under_attack(daemon, attack), want)


def test_zero_window_holds_only_the_call(daemon: testing.Daemon) -> None:
    """A reader that never opens its window: its call ends at its deadline, nothing else waits."""

    def attack(address: str) -> Outcome:
        with connected(address) as c:
            c.start((SETTINGS_INITIAL_WINDOW_SIZE, 0))
            req = c.headers(1, PLUGINS, ("grpc-timeout", "300m"))
            c.send(req + c.frame(DATA, END_STREAM, 1, b"\x00\x00\x00\x00\x00"))
            return c.outcome(1)

    expect(under_attack(daemon, attack), ("status", 4))  # DEADLINE_EXCEEDED


def test_half_open_connections_and_slowloris(daemon: testing.Daemon) -> None:
    """Connections that never finish the preface, some dribbling it: closed at the timeout."""

    def attack(address: str) -> Outcome:
        clients = [Raw(address) for _ in range(300)]
        try:
            for i, c in enumerate(clients):
                if i % 2:
                    c.send(PREFACE[:3])  # a byte here and there, never the whole preface
            started = time.monotonic()
            for c in clients[1::2]:
                c.send(PREFACE[3:5])
            outcomes = {c.outcome() for c in clients}
            assert time.monotonic() - started < HANDSHAKE + 10
            assert len(outcomes) == 1, outcomes
            return outcomes.pop()
        finally:
            for c in clients:
                c.close()

    expect(under_attack(daemon, attack, witnesses=2), ("goaway", PROTOCOL_ERROR))


def test_idle_connection_is_closed(daemon: testing.Daemon) -> None:
    def attack(address: str) -> Outcome:
        with connected(address) as c:
            c.start()
            started = time.monotonic()
            out = c.outcome()
            assert time.monotonic() - started >= IDLE - 0.5
            return out

    expect(under_attack(daemon, attack, witnesses=2), ("goaway", NO_ERROR))


def test_connection_cap(short_dir_cap: Path) -> None:
    """``max_connections`` open: the next one is refused, ctr answers once one closes."""
    cap = 40
    config = f"version = 2\n[grpc]\n  max_connections = {cap}\n"
    d = testing.Daemon(short_dir_cap, config=config, env=testing.daemon_env(MODULES))
    with d:
        held = [Raw(d.address) for _ in range(cap - 1)]
        try:
            for c in held:
                c.start()
            ctr_version(d.address)  # the last free slot
            testing.wait_for(lambda: _take_slot(d.address, held), 10, "the last slot to be taken")
            with connected(d.address) as extra:
                assert extra.outcome() == ("goaway", ENHANCE_YOUR_CALM)
            held.pop().close()
            testing.wait_for(lambda: _can_call(d.address), 10, "a slot to free up")
        finally:
            for c in held:
                c.close()


def _take_slot(address: str, held: list[Raw]) -> bool:
    """Open a connection; keep it if the server took it (a refusal's SETTINGS is empty)."""
    c = Raw(address)
    c.start()
    frame = c.read_frame()
    if frame is not None and frame[0] == SETTINGS and frame[3]:
        held.append(c)
        return True
    c.close()
    return False


def _can_call(address: str) -> bool:
    try:
        ctr_version(address)
    except AssertionError:
        return False
    return True


@pytest.fixture
def short_dir_cap() -> Iterator[Path]:
    with testing.short_tempdir("pcdcap") as base:
        yield base


# -- RFC 9113 rules -----------------------------------------------------------------


def _settings(*pairs: tuple[int, int]) -> bytes:
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


def _rule(frames: Callable[[Raw], bytes], sid: int | None = None) -> Callable[[str], Outcome]:
    """Send ``frames``; for a stream error on ``sid``, check the connection still answers."""

    def attack(address: str) -> Outcome:
        with connected(address) as c:
            c.start()
            c.send(frames(c))
            out = c.outcome(sid)
            if sid is not None and out[0] != "goaway":
                c.send(c.frame(PING, 0, 0, b"pingpong"))
                while (frame := c.read_frame()) is not None:
                    if frame[0] == PING and frame[1] & ACK and frame[3] == b"pingpong":
                        return out
                return ("closed after the stream error", out[1])
            return out

    return attack


def _bad_utf8_request(c: Raw) -> bytes:
    block = c.block(VERSION) + b"\x00\x05x-bad\x02\xff\xfe"  # literal, not indexed
    return c.frame(HEADERS, END_HEADERS | END_STREAM, 1, block)


RULES: Final[dict[str, tuple[Callable[[str], Outcome], Outcome]]] = {
    # §6.5.2: SETTINGS_MAX_FRAME_SIZE within [2^14, 2^24-1] (0 spun the old loop forever)
    "max-frame-size-0": (
        _rule(lambda c: c.frame(SETTINGS, 0, 0, _settings((SETTINGS_MAX_FRAME_SIZE, 0)))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "max-frame-size-2^24": (
        _rule(lambda c: c.frame(SETTINGS, 0, 0, _settings((SETTINGS_MAX_FRAME_SIZE, 1 << 24)))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "initial-window-2^31": (
        _rule(
            lambda c: c.frame(SETTINGS, 0, 0, _settings((SETTINGS_INITIAL_WINDOW_SIZE, 1 << 31)))
        ),
        ("goaway", FLOW_CONTROL_ERROR),
    ),
    "enable-push-2": (
        _rule(lambda c: c.frame(SETTINGS, 0, 0, _settings((SETTINGS_ENABLE_PUSH, 2)))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "settings-length-7": (
        _rule(lambda c: c.frame(SETTINGS, 0, 0, b"\x00" * 7)),
        ("goaway", FRAME_SIZE_ERROR),
    ),
    "settings-ack-with-payload": (
        _rule(lambda c: c.frame(SETTINGS, ACK, 0, _settings((SETTINGS_ENABLE_PUSH, 0)))),
        ("goaway", FRAME_SIZE_ERROR),
    ),
    "settings-on-stream": (
        _rule(lambda c: c.frame(SETTINGS, 0, 1)),
        ("goaway", PROTOCOL_ERROR),
    ),
    "ping-length-7": (
        _rule(lambda c: c.frame(PING, 0, 0, b"1234567")),
        ("goaway", FRAME_SIZE_ERROR),
    ),
    "ping-on-stream": (
        _rule(lambda c: c.frame(PING, 0, 1, b"12345678")),
        ("goaway", PROTOCOL_ERROR),
    ),
    "window-update-length-3": (
        _rule(lambda c: c.frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")),
        ("goaway", FRAME_SIZE_ERROR),
    ),
    "window-update-0": (
        _rule(lambda c: c.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "connection-window-overflow": (
        _rule(lambda c: c.frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 31) - 1))),
        ("goaway", FLOW_CONTROL_ERROR),
    ),
    "stream-window-update-0": (
        _rule(lambda c: c.headers(1, VERSION) + c.frame(WINDOW_UPDATE, 0, 1, bytes(4)), sid=1),
        ("rst", PROTOCOL_ERROR),
    ),
    "stream-window-overflow": (
        _rule(
            lambda c: (
                c.headers(1, VERSION)
                + c.frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", (1 << 31) - 1))
            ),
            sid=1,
        ),
        ("rst", FLOW_CONTROL_ERROR),
    ),
    "rst-on-stream-0": (
        _rule(lambda c: c.frame(RST_STREAM, 0, 0, bytes(4))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "rst-on-idle-stream": (
        _rule(lambda c: c.frame(RST_STREAM, 0, 9, bytes(4))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "rst-length-3": (
        _rule(lambda c: c.headers(1, VERSION) + c.frame(RST_STREAM, 0, 1, bytes(3))),
        ("goaway", FRAME_SIZE_ERROR),
    ),
    "data-on-stream-0": (_rule(lambda c: c.frame(DATA, 0, 0, b"x")), ("goaway", PROTOCOL_ERROR)),
    "data-on-idle-stream": (_rule(lambda c: c.frame(DATA, 0, 7, b"x")), ("goaway", PROTOCOL_ERROR)),
    "data-after-end-stream": (
        _rule(
            lambda c: (
                c.headers(1, VERSION, ("grpc-timeout", "5S"), end=True) + c.frame(DATA, 0, 1, b"x")
            ),
            sid=1,
        ),
        ("rst", STREAM_CLOSED),
    ),
    "data-padding-too-long": (
        _rule(lambda c: c.headers(1, VERSION) + c.frame(DATA, PADDED, 1, b"\x09abc")),
        ("goaway", PROTOCOL_ERROR),
    ),
    "headers-on-stream-0": (
        _rule(lambda c: c.frame(HEADERS, END_HEADERS, 0, c.block(VERSION))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "even-stream-id": (
        _rule(lambda c: c.headers(2, VERSION, end=True)),
        ("goaway", PROTOCOL_ERROR),
    ),
    "stream-id-goes-down": (
        _rule(lambda c: c.headers(5, VERSION, end=True) + c.headers(3, VERSION, end=True)),
        ("goaway", PROTOCOL_ERROR),
    ),
    "push-promise-from-client": (
        _rule(lambda c: c.frame(PUSH_PROMISE, END_HEADERS, 1, bytes(4))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "priority-length-4": (
        _rule(lambda c: c.headers(1, VERSION) + c.frame(PRIORITY, 0, 1, bytes(4)), sid=1),
        ("rst", FRAME_SIZE_ERROR),
    ),
    "goaway-on-stream": (
        _rule(lambda c: c.frame(GOAWAY, 0, 1, bytes(8))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "frame-above-max-size": (
        _rule(lambda c: c.frame(DATA, 0, 1, bytes((1 << 20) + 1))),
        ("goaway", FRAME_SIZE_ERROR),
    ),
    "continuation-without-headers": (
        _rule(lambda c: c.frame(CONTINUATION, END_HEADERS, 1, c.block(VERSION))),
        ("goaway", PROTOCOL_ERROR),
    ),
    "bad-hpack-index": (
        _rule(lambda c: c.frame(HEADERS, END_HEADERS, 1, b"\xff\x80\x80\x80\x80\x01")),
        ("goaway", COMPRESSION_ERROR),
    ),
    # §8.2: malformed requests are stream errors; gRPC's own fields are call errors
    "empty-header-name": (
        _rule(lambda c: c.headers(1, VERSION, ("", "v"), end=True), sid=1),
        ("rst", PROTOCOL_ERROR),
    ),
    "uppercase-header-name": (
        _rule(lambda c: c.headers(1, VERSION, ("X-Upper", "v"), end=True), sid=1),
        ("rst", PROTOCOL_ERROR),
    ),
    "bad-utf8-header-value": (
        _rule(_bad_utf8_request, sid=1),
        ("rst", PROTOCOL_ERROR),
    ),
    "bad-base64-bin-value": (
        _rule(lambda c: c.headers(1, VERSION, ("x-key-bin", "!!!"), end=True), sid=1),
        ("status", 13),  # INTERNAL, as grpc-go
    ),
    "non-ascii-digit-grpc-timeout": (
        _rule(lambda c: c.headers(1, VERSION, ("grpc-timeout", "\u00b2S"), end=True), sid=1),
        ("status", 13),
    ),
}


def test_first_frame_must_be_settings(daemon: testing.Daemon) -> None:
    def attack(address: str) -> Outcome:
        with connected(address) as c:
            c.send(PREFACE + c.frame(PING, 0, 0, b"12345678"))
            return c.outcome()

    expect(under_attack(daemon, attack, witnesses=1), ("goaway", PROTOCOL_ERROR))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_rule(daemon: testing.Daemon, rule: str) -> None:
    attack, want = RULES[rule]
    expect(under_attack(daemon, attack, witnesses=1), want)


def test_rlimit_nofile_raised(short_dir_cap: Path) -> None:
    """Started with a soft RLIMIT_NOFILE of 1024, the daemon raises it to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard limit ({hard}) leaves nothing to raise")
    d = testing.Daemon(short_dir_cap, env=testing.daemon_env(MODULES))
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        d.start(wait=False)  # the daemon inherits the low soft limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        d.wait_ready()
        assert d.proc is not None
        with open(f"/proc/{d.proc.pid}/limits") as fh:
            line = next(x for x in fh if x.startswith("Max open files"))
        got_soft, got_hard = line.split()[3:5]
        assert got_soft == got_hard != "1024"
    finally:
        d.kill()
