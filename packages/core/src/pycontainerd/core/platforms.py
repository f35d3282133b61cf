"""Platforms: which OS and CPU an image or a runtime is for.

The model and rules are containerd's ``platforms`` package (itself the OCI
image spec's ``Platform``): specifiers read ``os[/arch[/variant]]``, names are
normalised (``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``, ``armhf`` ->
``arm``/``v7``...), and matching compares the normalised triples. ``only``
adds the platforms a CPU can also run (an ``arm64`` host runs ``arm/v7``
images), which is what ``ctr pull`` uses by default.
"""

from __future__ import annotations

import platform as _host
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Final

from pycontainerd.core.errdefs import InvalidArgumentError, UnimplementedError
from pycontainerd.core.gostr import go_quote

_COMPONENT: Final = re.compile(r"[A-Za-z0-9_-]+")
COMPONENT_PATTERN: Final = "^[A-Za-z0-9_-]+$"

KNOWN_OS: Final = frozenset(
    {
        "aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios",
        "js", "linux", "nacl", "netbsd", "openbsd", "plan9", "solaris", "wasip1",
        "windows", "zos",
    }
)  # fmt: skip
KNOWN_ARCH: Final = frozenset(
    {
        "386", "amd64", "amd64p32", "arm", "armbe", "arm64", "arm64be", "ppc64", "ppc64le",
        "loong64", "mips", "mipsle", "mips64", "mips64le", "mips64p32", "mips64p32le",
        "ppc", "riscv", "riscv64", "s390", "s390x", "sparc", "sparc64", "wasm",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Platform:
    """An OCI platform (``os``, ``architecture``, optional ``variant``...).

    Instances are plain values; use ``normalize`` before comparing values from
    different sources, or ``matches`` which does it for you.
    """

    os: str = ""
    architecture: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return format_platform(self)


def normalize_os(os_name: str) -> str:
    """Lower-case ``os_name``; ``macos`` becomes ``darwin``."""
    lowered = os_name.lower()
    return "darwin" if lowered == "macos" else lowered


_ARCH_ALIASES: Final = {
    "i386": "386",
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
}
# Variants that only restate the baseline of an architecture.
_BASELINE_VARIANTS: Final = {"amd64": {"v1"}, "arm64": {"8", "v8", "v8.0"}}


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """Canonical ``(architecture, variant)`` for the names people and kernels use."""
    arch, variant = arch.lower(), variant.lower()
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    arch = _ARCH_ALIASES.get(arch, arch)
    if arch == "386":
        variant = ""
    elif arch == "arm":
        if variant in {"", "5", "6", "7", "8"}:
            variant = "v" + (variant or "7")
    elif variant in _BASELINE_VARIANTS.get(arch, ()):
        variant = ""
    return arch, variant


def normalize(p: Platform) -> Platform:
    """``p`` with normalised OS, architecture and variant."""
    arch, variant = normalize_arch(p.architecture, p.variant)
    return replace(p, os=normalize_os(p.os), architecture=arch, variant=variant)


def host() -> Platform:
    """The platform this process runs on (containerd's ``DefaultSpec``)."""
    os_name = "linux" if sys.platform.startswith("linux") else normalize_os(sys.platform)
    machine = _host.machine() or "unknown"
    arch, variant = normalize_arch(machine, "")
    if machine.lower().startswith("armv"):
        arch, variant = "arm", "v" + machine[4:5]
    return Platform(os=os_name, architecture=arch, variant=variant)


def parse(specifier: str) -> Platform:
    """Parse ``os``, ``arch``, ``os/arch`` or ``os/arch/variant``.

    A single component is taken as an OS if it is a known one (the
    architecture then is the host's), else as an architecture (the OS then is
    the host's). The result is normalised.

    Raises:
        UnimplementedError: the specifier contains a wildcard (``*``).
        InvalidArgumentError: a component has characters outside
            ``[A-Za-z0-9_-]``, a single component is neither a known OS nor a
            known architecture, or there are more than three components.
    """
    quoted = go_quote(specifier)
    if "*" in specifier:
        msg = f"{quoted}: wildcards not yet supported"
        raise UnimplementedError(msg)
    parts = specifier.split("/")
    for part in parts:
        if not _COMPONENT.fullmatch(part):
            msg = (
                f"{go_quote(part)} is an invalid component of {quoted}: "
                f"platform specifier component must match {go_quote(COMPONENT_PATTERN)}"
            )
            raise InvalidArgumentError(msg)
    if len(parts) == 1:
        return _parse_single(specifier, parts[0])
    if len(parts) == 2:
        arch, variant = normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(os=normalize_os(parts[0]), architecture=arch, variant=variant)
    if len(parts) == 3:
        arch, variant = normalize_arch(parts[1], parts[2])
        if arch == "arm64" and not variant:
            variant = "v8"
        return Platform(os=normalize_os(parts[0]), architecture=arch, variant=variant)
    msg = f"{quoted}: cannot parse platform specifier"
    raise InvalidArgumentError(msg)


def _parse_single(specifier: str, part: str) -> Platform:
    here = host()
    os_name = normalize_os(part)
    if os_name in KNOWN_OS:
        return Platform(os=os_name, architecture=here.architecture, variant=here.variant)
    arch, variant = normalize_arch(part, "")
    if arch == "arm" and variant == "v7":
        variant = ""
    if arch in KNOWN_ARCH:
        return Platform(os=here.os, architecture=arch, variant=variant)
    msg = f"{go_quote(specifier)}: unknown operating system or architecture"
    raise InvalidArgumentError(msg)


def format_platform(p: Platform) -> str:
    """``os/arch[/variant]``; ``unknown`` when the OS is not set."""
    if not p.os:
        return "unknown"
    return "/".join(part for part in (p.os, p.architecture, p.variant) if part)


def matches(want: Platform, have: Platform) -> bool:
    """Whether ``have`` is exactly the platform ``want`` asks for, once normalised."""
    a, b = normalize(want), normalize(have)
    return (a.os, a.architecture, a.variant) == (b.os, b.architecture, b.variant)


def compatible(p: Platform) -> list[Platform]:
    """``p`` and the platforms it can also run, best first (containerd's ``Only``).

    ``arm64`` adds ``arm`` v8 down to v5; ``arm/vN`` adds lower ``arm``
    variants down to v5; ``amd64/vN`` adds lower ``amd64`` levels.
    """
    n = normalize(p)
    out = [n]
    if n.architecture == "arm64":
        out += [replace(n, architecture="arm", variant=f"v{v}") for v in (8, 7, 6, 5)]
    elif n.architecture == "arm" and re.fullmatch(r"v[5-8]", n.variant):
        top = int(n.variant[1:])
        out += [replace(n, variant=f"v{v}") for v in range(top - 1, 4, -1)]
    elif n.architecture == "amd64" and re.fullmatch(r"v[2-4]", n.variant):
        top = int(n.variant[1:])
        out += [replace(n, variant="" if v == 1 else f"v{v}") for v in range(top - 1, 0, -1)]
    return out


def only(want: Platform, have: Platform) -> bool:
    """Whether ``have`` is ``want`` or a platform ``want`` can also run."""
    return any(matches(candidate, have) for candidate in compatible(want))
