"""Go string formatting facts shared by modules that reproduce containerd's messages.

containerd formats identifiers, digests and filter fragments with Go's ``%q``
verb; clients compare those messages, so ``go_quote`` renders the same text.
Subsystems and the client use it to word their errors exactly as upstream.
"""

from __future__ import annotations

from typing import Final

_SIMPLE_ESCAPES: Final = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
    "\\": r"\\",
    '"': r"\"",
}

# Unicode's White_Space property above Latin-1, which Go's unicode.IsSpace uses.
_WIDE_SPACES: Final = frozenset(
    "\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)
_LATIN1_SPACES: Final = frozenset("\t\n\v\f\r \x85\xa0")


def go_is_space(ch: str) -> bool:
    """Whether ``ch`` is white space by Go's ``unicode.IsSpace``."""
    return ch in _LATIN1_SPACES or ch in _WIDE_SPACES


def _escape(ch: str) -> str:
    if ch in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x80:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def go_quote(s: str) -> str:
    """Render ``s`` as Go's ``%q`` / ``strconv.Quote`` does (a double-quoted literal)."""
    return '"' + "".join(_escape(ch) for ch in s) + '"'
