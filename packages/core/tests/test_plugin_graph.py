"""Dependency ordering of registrations."""

from __future__ import annotations

import itertools

import pytest

from pycontainerd.core.errdefs import FailedPreconditionError
from pycontainerd.core.plugin import (
    InitContext,
    PluginCycleError,
    PluginType,
    Registration,
    ordered,
)


async def _init(ic: InitContext) -> object:
    return ic


def reg(t: PluginType, pid: str, *requires: PluginType) -> Registration:
    return Registration(type=t, id=pid, init=_init, requires=tuple(requires))


def uris(regs: list[Registration]) -> list[str]:
    return [r.uri for r in regs]


CONTENT = reg(PluginType.CONTENT, "content")
NATIVE = reg(PluginType.SNAPSHOT, "native")
OVERLAY = reg(PluginType.SNAPSHOT, "overlayfs")
METADATA = reg(PluginType.METADATA, "bolt", PluginType.CONTENT, PluginType.SNAPSHOT)
GRPC_CONTENT = reg(PluginType.GRPC, "content", PluginType.SERVICE)
SERVICE_CONTENT = reg(PluginType.SERVICE, "content-service", PluginType.METADATA)


def test_providers_come_first() -> None:
    out = ordered([GRPC_CONTENT, SERVICE_CONTENT, METADATA, OVERLAY, NATIVE, CONTENT])
    assert uris(out) == [
        "io.containerd.content.v1.content",
        "io.containerd.snapshotter.v1.native",
        "io.containerd.snapshotter.v1.overlayfs",
        "io.containerd.metadata.v1.bolt",
        "io.containerd.service.v1.content-service",
        "io.containerd.grpc.v1.content",
    ]


def test_result_does_not_depend_on_input_order() -> None:
    regs = [GRPC_CONTENT, SERVICE_CONTENT, METADATA, OVERLAY, NATIVE, CONTENT]
    expected = uris(ordered(regs))
    for perm in itertools.permutations(regs):
        assert uris(ordered(perm)) == expected


def test_independent_plugins_sorted_by_uri() -> None:
    out = ordered([OVERLAY, CONTENT, NATIVE])
    assert uris(out) == sorted(r.uri for r in (OVERLAY, CONTENT, NATIVE))


def test_requires_walked_in_declared_order() -> None:
    # The requirer sorts first; its requires (SNAPSHOT, then DIFF) decide the
    # order of its providers, not their URIs.
    first = reg(PluginType.CONTENT, "a", PluginType.SNAPSHOT, PluginType.DIFF)
    walking = reg(PluginType.DIFF, "walking")
    out = ordered([walking, NATIVE, first])
    assert uris(out) == [NATIVE.uri, walking.uri, first.uri]


def test_disabled_dropped_and_does_not_satisfy() -> None:
    out = ordered([METADATA, CONTENT, NATIVE, OVERLAY], disabled={OVERLAY.uri})
    assert OVERLAY.uri not in uris(out)
    assert uris(out) == [CONTENT.uri, NATIVE.uri, METADATA.uri]


def test_missing_requirement_is_not_an_error_here() -> None:
    # Whether a plugin can run without its providers is decided by its init
    # (get_single raises NotFoundError), as in containerd.
    assert uris(ordered([METADATA])) == [METADATA.uri]


def test_same_type_requirement_excludes_itself() -> None:
    a = reg(PluginType.SNAPSHOT, "a", PluginType.SNAPSHOT)
    b = reg(PluginType.SNAPSHOT, "b")
    assert uris(ordered([a, b])) == [b.uri, a.uri]


def test_duplicate_uri_rejected() -> None:
    again = reg(PluginType.CONTENT, "content")
    with pytest.raises(
        ValueError, match=r"^io\.containerd\.content\.v1\.content: plugin: id already registered$"
    ):
        ordered([CONTENT, NATIVE, again])


def test_duplicate_uri_rejected_even_if_disabled() -> None:
    with pytest.raises(ValueError, match="id already registered"):
        ordered([CONTENT, reg(PluginType.CONTENT, "content")], disabled={CONTENT.uri})


def test_cycle_names_the_chain() -> None:
    a = reg(PluginType.SERVICE, "a", PluginType.GRPC)
    b = reg(PluginType.GRPC, "b", PluginType.SERVICE)
    with pytest.raises(PluginCycleError) as excinfo:
        ordered([b, a])
    assert excinfo.value.chain == (
        "io.containerd.grpc.v1.b",
        "io.containerd.service.v1.a",
        "io.containerd.grpc.v1.b",
    )
    assert str(excinfo.value) == (
        "plugin dependency cycle: io.containerd.grpc.v1.b -> io.containerd.service.v1.a"
        " -> io.containerd.grpc.v1.b: failed precondition"
    )
    assert isinstance(excinfo.value, FailedPreconditionError)


def test_cycle_chain_starts_at_the_repeated_plugin() -> None:
    # content requires nothing; x -> y -> z -> y is the cycle, x only leads in.
    x = reg(PluginType.GRPC, "x", PluginType.SERVICE)
    y = reg(PluginType.SERVICE, "y", PluginType.METADATA)
    z = reg(PluginType.METADATA, "z", PluginType.SERVICE)
    with pytest.raises(PluginCycleError) as excinfo:
        ordered([x, y, z])
    assert excinfo.value.chain == (y.uri, z.uri, y.uri)


def test_cycle_broken_by_disabling() -> None:
    a = reg(PluginType.SERVICE, "a", PluginType.GRPC)
    b = reg(PluginType.GRPC, "b", PluginType.SERVICE)
    assert uris(ordered([a, b], disabled=[a.uri])) == [b.uri]


def test_empty() -> None:
    assert ordered([]) == []
