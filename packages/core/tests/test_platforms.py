"""Platform parsing, formatting, normalisation and matching."""

from __future__ import annotations

import pytest

from pycontainerd.core import platforms
from pycontainerd.core.errdefs import InvalidArgumentError, UnimplementedError
from pycontainerd.core.platforms import Platform


def p(os: str, arch: str, variant: str = "") -> Platform:
    return Platform(os=os, architecture=arch, variant=variant)


@pytest.mark.parametrize(
    ("arch", "variant", "expected"),
    [
        ("x86_64", "", ("amd64", "")),
        ("x86-64", "", ("amd64", "")),
        ("AMD64", "v1", ("amd64", "")),
        ("amd64", "v3", ("amd64", "v3")),
        ("aarch64", "", ("arm64", "")),
        ("arm64", "v8", ("arm64", "")),
        ("arm64", "8", ("arm64", "")),
        ("arm64", "v8.0", ("arm64", "")),
        ("arm64", "v9", ("arm64", "v9")),
        ("armhf", "", ("arm", "v7")),
        ("armel", "", ("arm", "v6")),
        ("arm", "", ("arm", "v7")),
        ("arm", "6", ("arm", "v6")),
        ("arm", "v5", ("arm", "v5")),
        ("i386", "", ("386", "")),
        ("s390x", "", ("s390x", "")),
    ],
)
def test_normalize_arch(arch: str, variant: str, expected: tuple[str, str]) -> None:
    assert platforms.normalize_arch(arch, variant) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("linux/amd64", p("linux", "amd64")),
        ("Linux/x86_64", p("linux", "amd64")),
        ("linux/arm64", p("linux", "arm64")),
        ("linux/arm64/v8", p("linux", "arm64", "v8")),
        ("linux/aarch64/v8", p("linux", "arm64", "v8")),
        ("linux/arm/v7", p("linux", "arm", "v7")),
        ("linux/arm", p("linux", "arm")),
        ("linux/armel", p("linux", "arm", "v6")),
        ("macos/arm64", p("darwin", "arm64")),
        ("windows/amd64", p("windows", "amd64")),
    ],
)
def test_parse(spec: str, expected: Platform) -> None:
    assert platforms.parse(spec) == expected


def test_parse_single_component_uses_host_for_the_rest() -> None:
    here = platforms.host()
    assert platforms.parse("linux") == p("linux", here.architecture, here.variant)
    got = platforms.parse("arm64")
    assert (got.os, got.architecture) == (here.os, "arm64")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "linux/am d64",
            '"am d64" is an invalid component of "linux/am d64": platform specifier '
            'component must match "^[A-Za-z0-9_-]+$"',
        ),
        ("", '"" is an invalid component of "": platform specifier component must match'),
        ("nonsense", '"nonsense": unknown operating system or architecture'),
        ("linux/amd64/v3/x", '"linux/amd64/v3/x": cannot parse platform specifier'),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        platforms.parse(spec)
    assert str(excinfo.value).startswith(message)
    assert str(excinfo.value).endswith(": invalid argument")


def test_wildcards_not_implemented() -> None:
    with pytest.raises(UnimplementedError, match="wildcards not yet supported: not implemented"):
        platforms.parse("linux/*")


def test_format() -> None:
    assert platforms.format_platform(p("linux", "arm", "v7")) == "linux/arm/v7"
    assert str(p("linux", "amd64")) == "linux/amd64"
    assert str(Platform()) == "unknown"


def test_host_is_normalized() -> None:
    here = platforms.host()
    assert here.os
    assert platforms.normalize(here) == here


def test_matches_normalizes_both_sides() -> None:
    assert platforms.matches(p("linux", "x86_64"), p("Linux", "amd64", "v1"))
    assert platforms.matches(p("linux", "aarch64", "v8"), p("linux", "arm64"))
    assert not platforms.matches(p("linux", "amd64"), p("linux", "arm64"))
    assert not platforms.matches(p("linux", "arm", "v6"), p("linux", "arm", "v7"))


def test_only_adds_what_the_cpu_can_run() -> None:
    arm64 = p("linux", "arm64")
    assert platforms.only(arm64, p("linux", "arm", "v7"))
    assert platforms.only(arm64, p("linux", "arm", "v5"))
    assert not platforms.only(arm64, p("linux", "amd64"))
    assert platforms.only(p("linux", "arm", "v7"), p("linux", "arm", "v6"))
    assert not platforms.only(p("linux", "arm", "v6"), p("linux", "arm", "v7"))
    assert platforms.only(p("linux", "amd64", "v3"), p("linux", "amd64"))
    assert not platforms.only(p("linux", "amd64"), p("linux", "amd64", "v2"))
    assert [str(x) for x in platforms.compatible(p("linux", "arm", "v7"))] == [
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/arm/v5",
    ]
