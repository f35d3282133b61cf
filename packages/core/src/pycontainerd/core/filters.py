r"""containerd's filter language, used by every List and Subscribe call.

A filter is a comma-separated list of *selectors*, all of which must match
(AND); a request that carries several filters matches an object when any of
them does (OR). ``ctr images ls 'name~=^docker' 'labels.env==prod'`` is thus a
union, ``'name~=^docker,labels.env==prod'`` an intersection.

A selector is ``<fieldpath>[<operator><value>]``:

* ``fieldpath`` is one or more fields joined by ``.``; a field is a run of
  ``[A-Za-z0-9_-]`` or a double-quoted string (``labels."a b"``), so label
  keys with dots or spaces can be named. (containerd documents
  ``[A-Za-z][A-Za-z0-9_]+``, but its scanner accepts the wider set used here.)
* ``==`` equal (and present), ``!=`` not equal (an absent field counts as
  ``""``), ``~=`` regular-expression search; with no operator the selector
  asks whether the field is present.
* ``value`` is a double-quoted string or an unquoted run of anything but
  white space and commas. For ``~=`` the value may also be quoted with
  ``/.../`` or ``|...|``, which spares escaping a regex's ``"``.

Quoted strings follow Go's syntax (``\\n``, ``\\"``, ``\\x41``, ``\\u00e9``, ...).
White space may surround operators and follow commas. The empty filter
matches everything.

A syntax error raises ``FilterParseError`` (an ``InvalidArgumentError``) whose
message marks the offending character, as containerd's does::

    filters: parse error: [id >|=|< overlayfs]: unsupported operator "="

Differences from containerd, each deliberate:

* positions count characters, not UTF-8 bytes, so the marker never splits a
  character;
* a ``~=`` value that is not a valid (Python) regular expression is rejected
  when parsing, instead of silently matching nothing;
* regular expressions use Python's ``re`` (containerd uses Go's RE2); common
  syntax is shared, exotic constructs may differ.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Final, Protocol, TypeAlias, runtime_checkable

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.gostr import go_is_space, go_quote

__all__ = [
    "ALWAYS",
    "Adaptor",
    "AdaptorFunc",
    "All",
    "Always",
    "AnyOf",
    "Filter",
    "FilterParseError",
    "MappingAdaptor",
    "Operator",
    "Selector",
    "adapt",
    "joined_map",
    "parse",
    "parse_one",
]


# --- what a filter is matched against --------------------------------------------


@runtime_checkable
class Adaptor(Protocol):
    """Exposes an object's fields to filters (containerd's ``filters.Adaptor``).

    ``field`` returns the value at ``fieldpath`` and whether it is present.
    An absent field returns ``("", False)``; ``!=`` and ``~=`` then see ``""``.
    """

    def field(self, fieldpath: Sequence[str]) -> tuple[str, bool]:
        """Look up ``fieldpath`` (for example ``("labels", "env")``)."""
        ...


FieldFunc: TypeAlias = Callable[[Sequence[str]], tuple[str, bool]]


@dataclass(frozen=True, slots=True)
class AdaptorFunc:
    """An ``Adaptor`` from a plain function of the field path."""

    func: FieldFunc

    def field(self, fieldpath: Sequence[str]) -> tuple[str, bool]:
        return self.func(fieldpath)


def joined_map(values: Mapping[str, str]) -> FieldFunc:
    """A field function for a flat string map, such as labels or annotations.

    The rest of the field path is joined with ``.`` into one key, as
    containerd's adaptors do: ``labels.a.b`` looks up the label ``a.b``.
    """

    def lookup(rest: Sequence[str]) -> tuple[str, bool]:
        key = ".".join(rest)
        if key in values:
            return values[key], True
        return "", False

    return lookup


def _leaf(value: object) -> tuple[str, bool]:
    if value is None:
        return "", False
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, str | int | float):
        return str(value), True
    return "", False


@dataclass(frozen=True, slots=True)
class MappingAdaptor:
    """An ``Adaptor`` over nested mappings.

    Each path component selects a key of the current mapping. A leaf
    (``str``, ``int``, ``float``, ``bool`` shown as ``true``/``false``) is
    present when the path ends on it; ``None``, a mapping at the end of the
    path, or a path that goes past a leaf, is absent. A callable found on the
    way receives the rest of the path and answers for it (see ``joined_map``)::

        adapt({"id": "c1", "image": "busybox", "labels": joined_map(labels)})
    """

    data: Mapping[str, object]

    def field(self, fieldpath: Sequence[str]) -> tuple[str, bool]:
        node: object = self.data
        for i, component in enumerate(fieldpath):
            if isinstance(node, Mapping):
                if component not in node:
                    return "", False
                node = node[component]
            elif callable(node):
                return _call(node, fieldpath[i:])
            else:
                return "", False
        if not fieldpath or isinstance(node, Mapping):
            return "", False
        if callable(node):
            return _call(node, ())
        return _leaf(node)


def _call(func: Callable[..., object], rest: Sequence[str]) -> tuple[str, bool]:
    result = func(rest)
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], str)
        and isinstance(result[1], bool)
    ):
        return result[0], result[1]
    msg = f"field function returned {result!r}, expected (str, bool)"
    raise TypeError(msg)


def adapt(data: Mapping[str, object]) -> MappingAdaptor:
    """Shorthand for ``MappingAdaptor(data)``."""
    return MappingAdaptor(data)


# --- the filter objects --------------------------------------------------------


class Operator(StrEnum):
    """A selector's operator; the values are how containerd prints them."""

    PRESENT = "?"
    EQUAL = "=="
    NOT_EQUAL = "!="
    MATCHES = "~="


_FIELD_TEXT: Final = re.compile(r"[A-Za-z0-9_-]+")


def _format_field(name: str) -> str:
    return name if _FIELD_TEXT.fullmatch(name) else go_quote(name)


def _is_value_char(ch: str) -> bool:
    if ch == "," or go_is_space(ch):
        return False
    category = unicodedata.category(ch)
    return category[0] in "LMNPS" or category == "Zs"


_VALUE_CANNOT_START: Final = frozenset('/|",.=!~')


def _format_value(value: str) -> str:
    if value and value[0] not in _VALUE_CANNOT_START and all(map(_is_value_char, value)):
        return value
    return go_quote(value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Selector:
    """One ``<fieldpath>[<operator><value>]`` test.

    ``str()`` renders the selector in filter syntax, quoting where needed, so
    that ``parse_one(str(s))`` gives back an equal selector.
    """

    fieldpath: tuple[str, ...]
    operator: Operator = Operator.PRESENT
    value: str = ""
    _regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.fieldpath:
            msg = "selector needs a field path"
            raise ValueError(msg)
        if self.operator is Operator.MATCHES and self._regex is None:
            object.__setattr__(self, "_regex", re.compile(self.value))

    def match(self, adaptor: Adaptor) -> bool:
        """Whether the object behind ``adaptor`` passes this test."""
        value, present = adaptor.field(self.fieldpath)
        if self.operator is Operator.PRESENT:
            return present
        if self.operator is Operator.EQUAL:
            return present and value == self.value
        if self.operator is Operator.NOT_EQUAL:
            return value != self.value
        assert self._regex is not None  # set in __post_init__ # noqa: S101
        return self._regex.search(value) is not None

    def __str__(self) -> str:
        path = ".".join(_format_field(f) for f in self.fieldpath)
        if self.operator is Operator.PRESENT:
            return path
        return f"{path}{self.operator.value}{_format_value(self.value)}"


@dataclass(frozen=True, slots=True)
class All:
    """Selectors that must all match: one filter string."""

    selectors: tuple[Selector, ...]

    def match(self, adaptor: Adaptor) -> bool:
        """Whether every selector matches."""
        return all(s.match(adaptor) for s in self.selectors)

    def __str__(self) -> str:
        return ",".join(str(s) for s in self.selectors)


@dataclass(frozen=True, slots=True)
class Always:
    """Matches everything: the empty filter, or no filters at all."""

    def match(self, adaptor: Adaptor) -> bool:
        """Always true."""
        return True

    def __str__(self) -> str:
        return ""


ALWAYS: Final = Always()


@dataclass(frozen=True, slots=True)
class AnyOf:
    """Filters of which at least one must match: a request's repeated filters."""

    filters: tuple[All | Always, ...]

    def match(self, adaptor: Adaptor) -> bool:
        """Whether any filter matches."""
        return any(f.match(adaptor) for f in self.filters)

    def strings(self) -> list[str]:
        """The filters as strings, ready for a request's repeated field."""
        return [str(f) for f in self.filters]


Filter: TypeAlias = All | Always | AnyOf


# --- errors -------------------------------------------------------------------


class FilterParseError(InvalidArgumentError):
    """A filter string is malformed.

    Attributes:
        input: the filter string.
        position: index (in characters) of the offending character;
            ``len(input)`` when the input ended too early.
        reason: what was wrong, without the position.
    """

    def __init__(self, text: str, position: int, reason: str) -> None:
        self.input = text
        self.position = position
        self.reason = reason
        if position < len(text):
            where = f"{text[:position]} >|{text[position]}|< {text[position + 1 :]}"
        else:
            where = text
        super().__init__(f"filters: parse error: [{where}]: {reason}")


# --- scanner ------------------------------------------------------------------

# Pseudo-characters returned by the scanner; longer than one character so that
# they never equal, or are ``in``, a set of real characters.
_EOF: Final = "<eof>"
_ILLEGAL: Final = "<illegal>"


class _Kind(Enum):
    EOF = "EOF"
    ILLEGAL = "Illegal"
    QUOTED = "Quoted"
    SEPARATOR = "Separator"
    OPERATOR = "Operator"
    VALUE = "Value"
    FIELD = "Field"
    CHAR = "Char"


_QUOTE_CHARS: Final = frozenset('/|"')
_SEPARATOR_CHARS: Final = frozenset(",.")
_OPERATOR_CHARS: Final = frozenset("=!~")
_FIELD_CHARS: Final = frozenset("-_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_SIMPLE_ESCAPE_CHARS: Final = frozenset("abfnrtv\\")
_OCTAL_DIGITS: Final = frozenset("01234567")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_ESCAPE_WIDTH: Final = {"x": 2, "u": 4, "U": 8}


class _Scanner:
    """Splits a filter into tokens, with containerd's token rules.

    ``pos`` is the start of the character last read, ``end`` just after it.
    After an operator the scanner is in *value* mode, where a run of value
    characters is one token even if it looks like a field.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.end = 0
        self.value_mode = False
        self.error = ""

    def _fail(self, message: str) -> None:
        if not self.error:
            self.error = message

    def next(self) -> str:
        if self.end >= len(self.text):
            self.pos = len(self.text)
            return _EOF
        self.pos = self.end
        ch = self.text[self.end]
        self.end += 1
        if ch == "\0":
            self._fail("unexpected null")
            return _ILLEGAL
        if "\ud800" <= ch <= "\udfff":
            self._fail("rune error")
            return _ILLEGAL
        return ch

    def peek(self) -> str:
        saved = self.pos, self.end
        ch = self.next()
        self.pos, self.end = saved
        return ch

    def scan(self) -> tuple[int, _Kind, str]:
        ch = self.next()
        while ch not in (_EOF, _ILLEGAL) and go_is_space(ch):
            ch = self.next()
        start = self.pos
        if ch == _EOF:
            return start, _Kind.EOF, ""
        if ch == _ILLEGAL:
            return start, _Kind.ILLEGAL, ""
        if ch in _QUOTE_CHARS:
            kind = _Kind.QUOTED if self._quoted(ch) else _Kind.ILLEGAL
        elif ch in _SEPARATOR_CHARS:
            self.value_mode = False
            kind = _Kind.SEPARATOR
        elif ch in _OPERATOR_CHARS:
            self._consume_while(_OPERATOR_CHARS.__contains__)
            self.value_mode = True
            kind = _Kind.OPERATOR
        elif self.value_mode:
            self._consume_while(_is_value_char_or_eof)
            self.value_mode = False
            kind = _Kind.VALUE
        elif ch in _FIELD_CHARS:
            self._consume_while(_FIELD_CHARS.__contains__)
            kind = _Kind.FIELD
        else:
            kind = _Kind.CHAR
        return start, kind, self.text[start : self.end]

    def _consume_while(self, accept: Callable[[str], bool]) -> None:
        while accept(self.peek()):
            self.next()

    def _quoted(self, quote: str) -> bool:
        legal = True
        ch = self.next()
        while ch != quote:
            if ch in ("\n", _EOF, _ILLEGAL):
                self._fail("quoted literal not terminated")
                return False
            if ch == "\\":
                ch, ok = self._escape(quote)
                legal = legal and ok
            else:
                ch = self.next()
        return legal

    def _escape(self, quote: str) -> tuple[str, bool]:
        ch = self.next()
        if ch in _SIMPLE_ESCAPE_CHARS or ch == quote:
            return self.next(), True
        if ch in _OCTAL_DIGITS:
            return self._digits(ch, _OCTAL_DIGITS, 3)
        if ch in _ESCAPE_WIDTH:
            return self._digits(self.next(), _HEX_DIGITS, _ESCAPE_WIDTH[ch])
        self._fail("illegal escape sequence")
        return ch, False

    def _digits(self, ch: str, digits: frozenset[str], count: int) -> tuple[str, bool]:
        while count > 0 and ch in digits:
            ch = self.next()
            count -= 1
        if count > 0:
            self._fail("illegal numeric escape sequence")
            return ch, False
        return ch, True


def _is_value_char_or_eof(ch: str) -> bool:
    return len(ch) == 1 and _is_value_char(ch)


class _QuoteSyntaxError(Exception):
    pass


def _unquote(token: str) -> str:
    """Decode a quoted token (Go syntax, with ``"``, ``/`` or ``|`` as the quote)."""
    if len(token) < 2 or token[0] != token[-1] or token[0] not in _QUOTE_CHARS:
        raise _QuoteSyntaxError
    quote, body = token[0], token[1:-1]
    if "\n" in body:
        raise _QuoteSyntaxError
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == quote:
            raise _QuoteSyntaxError
        if ch == "\\":
            i = _unescape(body, i + 1, quote, out)
        else:
            out += ch.encode("utf-8", "surrogatepass")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def _unescape(body: str, i: int, quote: str, out: bytearray) -> int:
    """Decode the escape whose letter is at ``body[i]`` into ``out``; return the next index."""
    if i >= len(body):
        raise _QuoteSyntaxError
    esc = body[i]
    i += 1
    if esc in _GO_SIMPLE:
        out.append(_GO_SIMPLE[esc])
        return i
    if esc in _ESCAPE_WIDTH:
        width = _ESCAPE_WIDTH[esc]
        digits = body[i : i + width]
        if len(digits) < width or not set(digits) <= _HEX_DIGITS:
            raise _QuoteSyntaxError
        code = int(digits, 16)
        if esc == "x":
            out.append(code)  # a single byte, possibly not UTF-8 on its own
        elif code > 0x10FFFF:
            raise _QuoteSyntaxError
        else:
            # Go encodes a surrogate code point as the replacement character.
            out += chr(0xFFFD if 0xD800 <= code <= 0xDFFF else code).encode("utf-8")
        return i + width
    if esc in _OCTAL_DIGITS:
        digits = body[i - 1 : i + 2]
        if len(digits) < 3 or not set(digits) <= _OCTAL_DIGITS or int(digits, 8) > 0xFF:
            raise _QuoteSyntaxError
        out.append(int(digits, 8))
        return i + 2
    if esc == quote:
        out += esc.encode()
        return i
    raise _QuoteSyntaxError


_GO_SIMPLE: Final = {
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "v": 0x0B,
    "\\": 0x5C,
}


# --- parser -------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.scanner = _Scanner(text)

    def error(self, position: int, reason: str) -> FilterParseError:
        return FilterParseError(self.text, position, reason)

    def selectors(self) -> All:
        selectors = [self.selector()]
        while True:
            ch = self.scanner.peek()
            if ch == _EOF:
                return All(tuple(selectors))
            if ch == ",":
                position, kind, _ = self.scanner.scan()
                if kind is not _Kind.SEPARATOR:  # pragma: no cover - ',' always is
                    raise self.error(position, "expected a separator")
                selectors.append(self.selector())
                continue
            if ch == _ILLEGAL:
                raise self.error(self.scanner.end, self.scanner.error)
            raise self.error(self.scanner.end, f"unexpected input: {ch}")

    def selector(self) -> Selector:
        fieldpath = self.fieldpath()
        if self.scanner.peek() in (",", _EOF):
            return Selector(fieldpath=fieldpath)
        operator = self.operator()
        position, value = self.value(alternative_quotes=operator is Operator.MATCHES)
        regex = None
        if operator is Operator.MATCHES:
            try:
                regex = re.compile(value)
            except re.error as exc:
                raise self.error(
                    position, f"invalid regular expression {go_quote(value)}: {exc.msg}"
                ) from None
        return Selector(fieldpath=fieldpath, operator=operator, value=value, _regex=regex)

    def fieldpath(self) -> tuple[str, ...]:
        fields = [self.field()]
        while self.scanner.peek() == ".":
            self.scanner.scan()
            fields.append(self.field())
        return tuple(fields)

    def field(self) -> str:
        position, kind, text = self.scanner.scan()
        if kind is _Kind.FIELD:
            return text
        if kind is _Kind.QUOTED:
            return self.unquote(position, text, alternative_quotes=False)
        if kind is _Kind.ILLEGAL:
            raise self.error(position, self.scanner.error)
        raise self.error(position, "expected field or quoted")

    def operator(self) -> Operator:
        position, kind, text = self.scanner.scan()
        if kind is _Kind.OPERATOR:
            if text in _OPERATORS:
                return _OPERATORS[text]
            raise self.error(position, f"unsupported operator {go_quote(text)}")
        if kind is _Kind.ILLEGAL:
            raise self.error(position, self.scanner.error)
        raise self.error(position, 'expected an operator ("=="|"!="|"~=")')

    def value(self, *, alternative_quotes: bool) -> tuple[int, str]:
        position, kind, text = self.scanner.scan()
        if kind in (_Kind.VALUE, _Kind.FIELD):
            return position, text
        if kind is _Kind.QUOTED:
            return position, self.unquote(position, text, alternative_quotes=alternative_quotes)
        if kind is _Kind.ILLEGAL:
            raise self.error(position, self.scanner.error)
        raise self.error(position, "expected value or quoted")

    def unquote(self, position: int, token: str, *, alternative_quotes: bool) -> str:
        if not alternative_quotes and token[0] != '"':
            raise self.error(position, "invalid quote encountered")
        try:
            return _unquote(token)
        except _QuoteSyntaxError:
            raise self.error(position, "unquoting failed: quote syntax error") from None


_OPERATORS: Final = {
    "==": Operator.EQUAL,
    "!=": Operator.NOT_EQUAL,
    "~=": Operator.MATCHES,
}


def parse_one(text: str) -> All | Always:
    """Parse one filter string (selectors joined by commas, all must match).

    Raises:
        FilterParseError: the string is malformed (an ``InvalidArgumentError``).
    """
    if text == "":
        return ALWAYS
    return _Parser(text).selectors()


def parse(*filters: str) -> Filter:
    """Parse a request's filters: an object matches when any of them matches.

    No filters, or an empty one among them, match everything.

    Raises:
        FilterParseError: a filter is malformed (an ``InvalidArgumentError``);
            the first bad one is reported.
    """
    if not filters:
        return ALWAYS
    parsed = tuple(parse_one(f) for f in filters)
    if len(parsed) == 1:
        return parsed[0]
    return AnyOf(parsed)
