from __future__ import annotations

import io

from pycontainerd.ctr.tabwriter import TabWriter
from pycontainerd.ctr.units import bytes_size, human_duration, human_size


def fmt(text: str, *args: object) -> str:
    out = io.StringIO()
    w = TabWriter(out, *args)  # type: ignore[arg-type]
    w.write(text)
    w.flush()
    return out.getvalue()


def test_space_padding_with_trailing_tab() -> None:
    text = "NAME\tLABELS\t\ndefault\t\t\nfoo\ta=b,c=d\t\n"
    assert fmt(text, 1, 8, 1, " ") == "NAME    LABELS  \ndefault         \nfoo     a=b,c=d \n"


def test_tab_padding_rounds_to_tabwidth() -> None:
    digest = "sha256:" + "a" * 64
    text = f"DIGEST\tSIZE\tAGE\tLABELS\n{digest}\t3B\tLess than a second\t-\n"
    out = fmt(text, 1, 8, 1, "\t")
    assert out.splitlines()[0] == "DIGEST" + "\t" * 9 + "SIZE\tAGE\t\t\tLABELS"
    assert out.splitlines()[1] == f"{digest}\t3B\tLess than a second\t-"


def test_line_without_cells_ends_a_block() -> None:
    text = "a\tb\t\n\t\t\t\nlonger-cell\tx\t\n"
    out = fmt(text, 4, 8, 4, " ")
    # the block spans all three lines (the middle one has cells too)
    assert out.splitlines()[0].startswith("a" + " " * 14)
    text = "a\tb\t\nplain line\nlonger-cell\tx\t\n"
    lines = fmt(text, 4, 8, 4, " ").splitlines()
    assert lines[0] == "a    b    "
    assert lines[1] == "plain line"


def test_sizes_and_durations() -> None:
    from datetime import timedelta

    assert human_size(3) == "3B"
    assert human_size(1234) == "1.234kB"
    assert human_size(999_999) == "1000kB"
    assert bytes_size(840) == "840.0 B"
    assert bytes_size(1.2 * 1024 * 1024) == "1.2 MiB"
    assert human_duration(timedelta(milliseconds=300)) == "Less than a second"
    assert human_duration(timedelta(seconds=1)) == "1 second"
    assert human_duration(timedelta(seconds=59)) == "59 seconds"
    assert human_duration(timedelta(seconds=90)) == "About a minute"
    assert human_duration(timedelta(hours=1, minutes=20)) == "About an hour"
    assert human_duration(timedelta(days=3)) == "3 days"
