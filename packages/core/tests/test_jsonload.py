"""``load_json``: the document of the wanted type, or a ValueError naming the problem."""

from __future__ import annotations

import pytest

from pycontainerd.core.jsonload import load_json


def test_a_document_of_the_wanted_type_is_returned() -> None:
    assert load_json(b'{"a": [1]}', dict) == {"a": [1]}
    assert load_json("[1, 2]", list) == [1, 2]


def test_text_that_is_not_json_says_invalid_json_and_the_parsers_reason() -> None:
    with pytest.raises(ValueError, match=r"^invalid JSON: Expecting property name"):
        load_json(b"{not json", dict)


@pytest.mark.parametrize(
    ("data", "kind", "reason"),
    [
        (b"[]", dict, "not a JSON object"),
        (b"{}", list, "not a JSON array"),
        (b"1", str, "not a JSON string"),
        (b'"x"', int, "not a JSON int"),
    ],
)
def test_a_document_of_another_type_names_the_wanted_one(
    data: bytes, kind: type, reason: str
) -> None:
    with pytest.raises(ValueError, match=f"^{reason}$"):
        load_json(data, kind)
