"""The filter grammar: examples, error messages and matching semantics."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.core import filters
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.filters import (
    ALWAYS,
    AdaptorFunc,
    All,
    AnyOf,
    FilterParseError,
    Operator,
    Selector,
    adapt,
    joined_map,
    parse,
    parse_one,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


def entry(name: str = "", other: str = "", labels: Mapping[str, str] | None = None) -> AdaptorFunc:
    """Upstream's test adaptor shape: name, other, labels.<joined key>."""

    def field(path: Sequence[str]) -> tuple[str, bool]:
        if path[0] == "name":
            return name, bool(name)
        if path[0] == "other":
            return other, bool(other)
        if path[0] == "labels":
            return joined_map(labels or {})(path[1:])
        return "", False

    return AdaptorFunc(field)


CORPUS = [
    entry("foo", labels={"foo": "true"}),
    entry("bar"),
    entry("foo", labels={"foo": "present", "more complex label": "present"}),
    entry("bar", labels={"bar": "true"}),
    entry("fooer", labels={'more complex label with \\ and "': "present"}),
    entry("fooer", labels={'more complex label with \\ and ".post': "present"}),
    entry("baz", other="too complex, yo"),
    entry("bazo", other="abc"),
    entry("compound", labels={"foo": "omg_asdf.asdf-qwer"}),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", list(range(9))),
        ("name", list(range(9))),
        ("labels.foo", [0, 2, 8]),
        ("labels.foo,name", [0, 2, 8]),
        ("labels.foo==true", [0]),
        ("labels.foo==omg_asdf.asdf-qwer", [8]),
        ("name==bar", [1, 3]),
        ("name!=bar", [0, 2, 4, 5, 6, 7, 8]),
        ("name==bar,labels.bar", [3]),
        ('other=="too complex, yo"', [6]),
        ("other~=[abc]+,name!=foo", [6, 7]),
        ("other~=/[abc]+/,name!=foo", [6, 7]),
        ("other~=|[abc]+|,name!=foo", [6, 7]),
        ("other~=/[abc]{1,2}/,name!=foo", [6, 7]),
        ('other~=/[abc]{0,1}"\\//,name!=foo', []),
        ("name==bar,labels.bar==true", [3]),
        ("name==bar,labels.bar==wrong", []),
        ('name==foo,labels."more complex label"', [2]),
        ('labels."more complex label with \\\\ and \\""==present', [4]),
        ('labels."more complex label with \\\\ and \\"".post==present', [5]),
        ("name == bar", [1, 3]),
        ("name==bar, labels.bar", [3]),
        ("  name==foo", [0, 2]),
        ('name=="\\x66oo"', [0, 2]),
        ('name=="\\u0066oo"', [0, 2]),
        ('name=="\\146oo"', [0, 2]),
    ],
)
def test_upstream_examples(text: str, expected: list[int]) -> None:
    f = parse(text)
    assert [i for i, item in enumerate(CORPUS) if f.match(item)] == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id=overlayfs", '[id >|=|< overlayfs]: unsupported operator "="'),
        ("id===x", '[id >|=|< ==x]: unsupported operator "==="'),
        ("id==!x", '[id >|=|< =!x]: unsupported operator "==!"'),
        (
            "labels.|foo|==omg_asdf.asdf-qwer",
            "[labels. >|||< foo|==omg_asdf.asdf-qwer]: invalid quote encountered",
        ),
        (
            'labels.?"more complex label with \\\\ and \\"".post==present',
            '[labels. >|?|< "more complex label with \\\\ and \\"".post==present]: '
            "expected field or quoted",
        ),
        ("name==foo,", "[name==foo,]: expected field or quoted"),
        ("labels.", "[labels.]: expected field or quoted"),
        ("image~=,id?=?fbaq", "[image~= >|,|< id?=?fbaq]: expected value or quoted"),
        ("labels.ns/key==value", "[labels.ns >|/|< key==value]: quoted literal not terminated"),
        ("labels.key==/value", "[labels.key== >|/|< value]: quoted literal not terminated"),
        ("id==/x/", "[id== >|/|< x/]: invalid quote encountered"),
        ("id==|x|", "[id== >|||< x|]: invalid quote encountered"),
        ("id==", "[id==]: expected value or quoted"),
        ("id==a b", "[id==a >| |< b]: unexpected input:  "),
        ("id ", '[id ]: expected an operator ("=="|"!="|"~=")'),
        ("a b", '[a  >|b|< ]: expected an operator ("=="|"!="|"~=")'),
        (" ", "[ ]: expected field or quoted"),
        (",", "[ >|,|< ]: expected field or quoted"),
        ('id=="abc', '[id== >|"|< abc]: quoted literal not terminated'),
        ('id=="a\nb"', '[id== >|"|< a\nb"]: quoted literal not terminated'),
        ('id=="\\q"', '[id== >|"|< \\q"]: illegal escape sequence'),
        ('id=="\\x4"', '[id== >|"|< \\x4"]: illegal numeric escape sequence'),
        ('id=="\\777"', '[id== >|"|< \\777"]: unquoting failed: quote syntax error'),
        ('id=="\\U00110000"', '[id== >|"|< \\U00110000"]: unquoting failed: quote syntax error'),
        ('id=="\\/"', '[id== >|"|< \\/"]: illegal escape sequence'),
        ("id==a\x00", "[id==a >|\x00|< ]: unexpected null"),
        ("id\x00", "[id >|\x00|< ]: unexpected null"),
        ("id==.x", "[id== >|.|< x]: expected value or quoted"),
        ("id==x,,y", "[id==x, >|,|< y]: expected field or quoted"),
        (
            "id~=/(/",
            '[id~= >|/|< (/]: invalid regular expression "(": missing ), unterminated subpattern',
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(FilterParseError) as excinfo:
        parse(text)
    assert str(excinfo.value) == f"filters: parse error: {message}: invalid argument"
    assert isinstance(excinfo.value, InvalidArgumentError)
    assert excinfo.value.input == text


def test_error_position_and_reason() -> None:
    with pytest.raises(FilterParseError) as excinfo:
        parse("type==x", "id=overlayfs")
    assert excinfo.value.position == 2
    assert excinfo.value.reason == 'unsupported operator "="'
    assert excinfo.value.input == "id=overlayfs"


def test_structure() -> None:
    f = parse_one('labels."a b".c==x,id,topic~=/^\\/tasks\\//')
    assert f == All(
        (
            Selector(fieldpath=("labels", "a b", "c"), operator=Operator.EQUAL, value="x"),
            Selector(fieldpath=("id",)),
            Selector(fieldpath=("topic",), operator=Operator.MATCHES, value="^/tasks/"),
        )
    )


def test_single_letter_and_odd_fields_follow_upstream_scanner() -> None:
    # containerd documents [A-Za-z][A-Za-z0-9_]+, but its scanner accepts these.
    assert parse_one("a==1") == All(
        (Selector(fieldpath=("a",), operator=Operator.EQUAL, value="1"),)
    )
    assert parse_one("1x-y_z").selectors[0].fieldpath == ("1x-y_z",)  # type: ignore[union-attr]


def test_value_may_contain_dots_and_operators() -> None:
    f = parse_one("name==docker.io/library/busybox:latest,x==a=b!c~d")
    assert isinstance(f, All)
    assert [s.value for s in f.selectors] == ["docker.io/library/busybox:latest", "a=b!c~d"]


def test_empty_and_no_filters_match_all() -> None:
    assert parse() is ALWAYS
    assert parse("") is ALWAYS
    assert parse("id==x", "").match(adapt({"id": "y"}))
    assert str(ALWAYS) == ""


def test_or_of_filters_and_and_within() -> None:
    f = parse("type~=snapshot", "id==bolt")
    assert isinstance(f, AnyOf)
    items = [
        {"type": "io.containerd.snapshotter.v1", "id": "overlayfs"},
        {"type": "io.containerd.metadata.v1", "id": "bolt"},
        {"type": "io.containerd.content.v1", "id": "content"},
    ]
    assert [f.match(adapt(i)) for i in items] == [True, True, False]
    g = parse("id==overlayfs,type==io.containerd.snapshotter.v1")
    assert [g.match(adapt(i)) for i in items] == [True, False, False]
    assert f.strings() == ["type~=snapshot", "id==bolt"]


def test_operator_semantics_on_absent_fields() -> None:
    absent = adapt({})
    assert not parse("x").match(absent)
    assert not parse('x==""').match(absent)
    assert parse("x!=a").match(absent)
    assert not parse('x!=""').match(absent)
    assert parse('x~=""').match(absent)  # empty regex matches the empty value
    assert parse("x~=^$").match(absent)
    present_empty = adapt({"x": ""})
    assert parse("x").match(present_empty)
    assert parse('x==""').match(present_empty)


def test_regex_is_a_search() -> None:
    assert parse("topic~=namespaces").match(adapt({"topic": "/namespaces/create"}))
    assert not parse("topic~=^namespaces").match(adapt({"topic": "/namespaces/create"}))
    assert parse('topic~="/namespaces/"').match(adapt({"topic": "/namespaces/create"}))


def test_mapping_adaptor() -> None:
    obj = adapt(
        {
            "id": "c1",
            "runtime": {"name": "io.containerd.runc.v2"},
            "labels": joined_map({"a.b": "1", "c": "2"}),
            "count": 3,
            "flag": True,
            "none": None,
        }
    )
    assert obj.field(("id",)) == ("c1", True)
    assert obj.field(("runtime", "name")) == ("io.containerd.runc.v2", True)
    assert obj.field(("runtime",)) == ("", False)
    assert obj.field(("runtime", "name", "x")) == ("", False)
    assert obj.field(("labels", "a", "b")) == ("1", True)
    assert obj.field(("labels", "c")) == ("2", True)
    assert obj.field(("labels", "d")) == ("", False)
    assert obj.field(("count",)) == ("3", True)
    assert obj.field(("flag",)) == ("true", True)
    assert obj.field(("none",)) == ("", False)
    assert obj.field(()) == ("", False)
    assert isinstance(obj, filters.Adaptor)
    assert parse("labels.a.b==1,runtime.name~=runc").match(obj)


def test_mapping_adaptor_rejects_bad_field_function() -> None:
    obj = adapt({"labels": lambda rest: "oops"})
    with pytest.raises(TypeError, match="expected \\(str, bool\\)"):
        obj.field(("labels", "x"))


def test_selector_str_quotes_when_needed() -> None:
    s = Selector(fieldpath=("labels", "a b", "c.d"), operator=Operator.NOT_EQUAL, value="x, y")
    assert str(s) == 'labels."a b"."c.d"!="x, y"'
    assert parse_one(str(s)) == All((s,))
    assert str(Selector(fieldpath=("id",), operator=Operator.EQUAL, value="")) == 'id==""'
    assert str(Selector(fieldpath=("id",), operator=Operator.EQUAL, value="/x")) == 'id=="/x"'


def test_selector_needs_a_path() -> None:
    with pytest.raises(ValueError, match="field path"):
        Selector(fieldpath=())
