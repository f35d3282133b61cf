"""Property-based tests of the filter grammar (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import example, given
from hypothesis import strategies as st

from pycontainerd.core.filters import (
    ALWAYS,
    All,
    FilterParseError,
    Operator,
    Selector,
    adapt,
    parse,
    parse_one,
)

# Lone surrogates cannot travel through Go's quoting; everything else may.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
PLAIN = st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True)
COMPONENT = st.one_of(PLAIN, TEXT)


@st.composite
def selectors(draw: st.DrawFn, component: st.SearchStrategy[str] = COMPONENT) -> Selector:
    path = tuple(draw(st.lists(component, min_size=1, max_size=3)))
    op = draw(st.sampled_from(Operator))
    if op is Operator.PRESENT:
        return Selector(fieldpath=path)
    value = draw(TEXT)
    if op is Operator.MATCHES:
        value = draw(st.sampled_from([re.escape(value), "^x", ".*"]))
    return Selector(fieldpath=path, operator=op, value=value)


@given(st.lists(selectors(), min_size=1, max_size=4))
def test_round_trip(sels: list[Selector]) -> None:
    f = All(tuple(sels))
    assert parse_one(str(f)) == f


@given(st.lists(selectors(PLAIN), min_size=1, max_size=4))
def test_whitespace_around_operators_and_after_commas(sels: list[Selector]) -> None:
    parts = []
    for s in sels:
        path = ".".join(s.fieldpath)
        if s.operator is Operator.PRESENT:
            parts.append(path)
        else:
            value = str(s)[len(path) + 2 :]
            parts.append(f"{path} {s.operator.value}  {value}")
    assert parse_one("  " + ",\t ".join(parts)) == All(tuple(sels))


ARBITRARY = st.one_of(
    st.text(max_size=40),
    st.text(st.sampled_from(list('ab1_-=!~,."/|\\ \n\x00xuU07é')), max_size=30),
)


@given(ARBITRARY)
@example("id=overlayfs")
@example('labels."a')
@example("a~=/\\")
@example("a==\ud800")
def test_never_fails_with_anything_but_parse_errors(text: str) -> None:
    error: FilterParseError | None = None
    f: object = None
    try:
        f = parse_one(text)
    except FilterParseError as exc:
        error = exc
    if error is None:
        # Whatever parsed renders back to an equivalent filter.
        assert f is ALWAYS or parse_one(str(f)) == f
        return
    assert 0 <= error.position <= len(text)
    assert str(error).startswith("filters: parse error: [")
    assert str(error).endswith(f"]: {error.reason}: invalid argument")
    if error.position < len(text):
        before, at, after = text[: error.position], text[error.position], text[error.position + 1 :]
        assert f"[{before} >|{at}|< {after}]" in str(error)


# --- AND / OR semantics against an independent oracle ---------------------------------

FIELDS = st.sampled_from(["a", "b", "c"])
VALUES = st.sampled_from(["", "x", "y", "xy"])
DATA = st.dictionaries(FIELDS, VALUES, max_size=3)


@st.composite
def simple_selectors(draw: st.DrawFn) -> Selector:
    op = draw(st.sampled_from(Operator))
    path = (draw(FIELDS),)
    if op is Operator.PRESENT:
        return Selector(fieldpath=path)
    value = draw(st.sampled_from(["x", "y", "^x$", "y$"]) if op is Operator.MATCHES else VALUES)
    return Selector(fieldpath=path, operator=op, value=value)


def oracle(s: Selector, data: dict[str, str]) -> bool:
    present = s.fieldpath[0] in data
    value = data.get(s.fieldpath[0], "")
    return {
        Operator.PRESENT: present,
        Operator.EQUAL: present and value == s.value,
        Operator.NOT_EQUAL: value != s.value,
        Operator.MATCHES: re.search(s.value, value) is not None,
    }[s.operator]


@given(st.lists(simple_selectors(), min_size=1, max_size=4), DATA)
def test_comma_is_and(sels: list[Selector], data: dict[str, str]) -> None:
    text = ",".join(str(s) for s in sels)
    assert parse(text).match(adapt(data)) == all(oracle(s, data) for s in sels)


@given(st.lists(st.lists(simple_selectors(), min_size=1, max_size=3), min_size=1, max_size=3), DATA)
def test_several_filters_are_or(groups: list[list[Selector]], data: dict[str, str]) -> None:
    texts = [",".join(str(s) for s in g) for g in groups]
    expected = any(all(oracle(s, data) for s in g) for g in groups)
    assert parse(*texts).match(adapt(data)) == expected
