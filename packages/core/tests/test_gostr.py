"""Go's ``%q`` and ``unicode.IsSpace``, as containerd's messages use them."""

from __future__ import annotations

import pytest

from pycontainerd.core.gostr import go_is_space, go_quote


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", '""'),
        ("busybox:latest", '"busybox:latest"'),
        ('say "hi"\\', r'"say \"hi\"\\"'),
        ("tab\tnl\nbell\a", r'"tab\tnl\nbell\a"'),
        ("\x00\x7f", r'"\x00\x7f"'),
        ("café ☺ 😀", '"café ☺ 😀"'),  # printable runes stay as they are
        ("\u00a0\ufeff", r'"\u00a0\ufeff"'),
        ("\U000e0001", r'"\U000e0001"'),
    ],
)
def test_go_quote_matches_strconv_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


def test_go_is_space() -> None:
    assert all(go_is_space(ch) for ch in " \t\n\v\f\r\x85\xa0\u2000\u3000")
    assert not any(go_is_space(ch) for ch in "a_\x00\u200b")
