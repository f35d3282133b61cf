"""Kubernetes remotecommand and port-forward protocol facts, independent of transport.

Subprotocols (SPDY ``X-Stream-Protocol-Version``, WebSocket
``Sec-WebSocket-Protocol``), the v1 Status JSON that v4+ writes on the error
stream, the resize messages (JSON ``{"Width": w, "Height": h}``, one after the
other on the resize stream), the WebSocket channel numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# SPDY remotecommand subprotocols, newest first (server preference is irrelevant
# upstream: the first one the CLIENT lists that the server knows wins).
SPDY_V4 = "v4.channel.k8s.io"
SPDY_V3 = "v3.channel.k8s.io"
SPDY_V2 = "v2.channel.k8s.io"
SPDY_V1 = "channel.k8s.io"
SPDY_REMOTECOMMAND = (SPDY_V4, SPDY_V3, SPDY_V2, SPDY_V1)
SPDY_PORTFORWARD = ("portforward.k8s.io",)

# WebSocket remotecommand subprotocols: binary (channel byte) or base64 (text,
# channel as an ASCII digit); v4+ write a Status JSON on the error channel and
# v5 adds the close-channel message.
WS_V5 = "v5.channel.k8s.io"
WS_V4 = "v4.channel.k8s.io"
WS_V4_BASE64 = "v4.base64.channel.k8s.io"
WS_V1 = "channel.k8s.io"
WS_V1_BASE64 = "base64.channel.k8s.io"
# client-go's WebSocket executor can also ask for the v3/v2 names (binary
# channels, plain-text errors); kubelet's own server lists only the five others.
WS_V3 = "v3.channel.k8s.io"
WS_V2 = "v2.channel.k8s.io"
WS_REMOTECOMMAND = (WS_V5, WS_V4, WS_V4_BASE64, WS_V3, WS_V2, WS_V1, WS_V1_BASE64)
WS_PORTFORWARD = ("portforward.k8s.io", WS_V4, WS_V4_BASE64)
WS_BASE64 = frozenset({WS_V4_BASE64, WS_V1_BASE64})

# WebSocket channels of remotecommand.
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE_CHANNEL = 255  # v5: [255, channel] = the peer closed that channel

# SPDY stream types (header "streamType").
STREAM_TYPE_HEADER = "streamtype"
STREAM_ERROR, STREAM_STDIN, STREAM_STDOUT, STREAM_STDERR, STREAM_RESIZE = (
    "error",
    "stdin",
    "stdout",
    "stderr",
    "resize",
)
STREAM_DATA = "data"
PORT_HEADER = "port"
REQUEST_ID_HEADER = "requestid"

NON_ZERO_EXIT_CODE_REASON = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


def status_success() -> bytes:
    """The v4 error-stream message of a command that succeeded."""
    return json.dumps({"metadata": {}, "status": "Success"}, separators=(",", ":")).encode()


def status_exit_code(code: int) -> bytes:
    """The v4 error-stream message of a command that exited with ``code`` != 0."""
    return json.dumps(
        {
            "metadata": {},
            "status": "Failure",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "reason": NON_ZERO_EXIT_CODE_REASON,
            "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]},
        },
        separators=(",", ":"),
    ).encode()


def status_error(message: str) -> bytes:
    """The v4 error-stream message of a failure other than an exit code."""
    return json.dumps(
        {"metadata": {}, "status": "Failure", "message": message, "code": 500},
        separators=(",", ":"),
    ).encode()


def exit_status_message(protocol: str, code: int | None, error: str | None) -> bytes:
    """What to write on the error stream for ``protocol``; empty = write nothing.

    v4 and later carry a Status JSON (success too); older protocols carry the
    plain error text and nothing on success.
    """
    v4 = protocol in (SPDY_V4, WS_V4, WS_V4_BASE64, WS_V5)
    if error is not None:
        return status_error(error) if v4 else error.encode()
    if code:
        return (
            status_exit_code(code)
            if v4
            else f"command terminated with non-zero exit code: {code}".encode()
        )
    return status_success() if v4 else b""


def parse_exit_status(data: bytes) -> int:
    """The exit code a v4 client reads from the error stream (for tests and tools).

    Raises:
        ValueError: the Status is a failure without an exit code.
    """
    if not data:
        return 0
    status = json.loads(data)
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == NON_ZERO_EXIT_CODE_REASON:
        for cause in status.get("details", {}).get("causes", []):
            if cause.get("reason") == EXIT_CODE_CAUSE:
                return int(cause["message"])
    raise ValueError(status.get("message", "unknown error"))


@dataclass(frozen=True)
class TerminalSize:
    """A terminal size in character cells."""

    width: int
    height: int


class ResizeDecoder:
    """Decode the resize stream: JSON objects back to back, in any chunking."""

    def __init__(self) -> None:
        self._buf = ""
        self._dec = json.JSONDecoder()

    def feed(self, data: bytes) -> list[TerminalSize]:
        self._buf += data.decode("utf-8", "replace")
        out: list[TerminalSize] = []
        while True:
            self._buf = self._buf.lstrip()
            if not self._buf:
                return out
            try:
                obj, end = self._dec.raw_decode(self._buf)
            except json.JSONDecodeError:
                if len(self._buf) > 4096:
                    msg = "resize stream carries no JSON object"
                    raise ValueError(msg) from None
                return out
            self._buf = self._buf[end:]
            if isinstance(obj, dict):
                out.append(TerminalSize(int(obj.get("Width", 0)), int(obj.get("Height", 0))))


def encode_resize(size: TerminalSize) -> bytes:
    """One resize message, as a client sends it."""
    return json.dumps({"Width": size.width, "Height": size.height}).encode()
