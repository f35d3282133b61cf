"""The HTTP/1.1 request head and plain responses, sans-IO (only what upgrades need)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

MAX_HEAD = 16 * 1024

REASONS = {
    101: "Switching Protocols",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
}


class BadRequestError(Exception):
    """The request head is not HTTP/1.1 we can serve."""


@dataclass(frozen=True)
class Request:
    """A parsed request head."""

    method: str
    target: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, list[str]]  # lower-case names, values in arrival order

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def tokens(self, name: str) -> list[str]:
        """All comma-separated items of every ``name`` header, stripped."""
        return [
            t.strip() for v in self.headers.get(name.lower(), []) for t in v.split(",") if t.strip()
        ]


def parse_request(head: bytes) -> Request:
    """Parse a request head (everything up to and including the blank line)."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as e:  # pragma: no cover - latin-1 decodes anything
        raise BadRequestError(str(e)) from e
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        msg = f"malformed request line {lines[0][:80]!r}"
        raise BadRequestError(msg)
    method, target, _ = parts
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            msg = f"malformed header line {line[:80]!r}"
            raise BadRequestError(msg)
        headers.setdefault(name.lower(), []).append(value.strip())
    url = urlsplit(target)
    return Request(method, target, url.path, parse_qs(url.query), headers)


def response(status: int, headers: list[tuple[str, str]] | None = None, body: str = "") -> bytes:
    """A complete response; a body gets a text/plain content type and length."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
    all_headers = list(headers or [])
    if status != 101:
        data = body.encode()
        all_headers += [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(data))),
            ("Connection", "close"),
        ]
    else:
        data = b""
    lines += [f"{k}: {v}" for k, v in all_headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
