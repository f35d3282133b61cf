from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
)
from pycontainerd.core.plugin import PluginType, Registration
from pycontainerd.daemon.introspection import Introspection
from pycontainerd.daemon.plugins import PluginResult, PluginSet

if TYPE_CHECKING:
    from pathlib import Path


async def _none(ic: object) -> None:
    return None


def plugin_set() -> PluginSet:
    regs = [
        Registration(type=PluginType.CONTENT, id="content", init=_none),
        Registration(type=PluginType.SNAPSHOT, id="native", init=_none),
        Registration(type=PluginType.SNAPSHOT, id="zfs", init=_none),
    ]
    return PluginSet([PluginResult(registration=r) for r in regs])


def test_uuid_is_created_once_and_persisted(tmp_path: Path) -> None:
    local = Introspection(plugin_set(), tmp_path)
    first = local.uuid()
    assert uuid.UUID(first).version == 4
    path = tmp_path / "io.containerd.grpc.v1.introspection" / "uuid"
    assert path.read_text() == first
    assert Introspection(plugin_set(), tmp_path).uuid() == first


def test_server_info_and_deprecations(tmp_path: Path) -> None:
    local = Introspection(plugin_set(), tmp_path)
    local.emit_deprecation("runtime-v1", "use io.containerd.runc.v2")
    local.emit_deprecation("io.containerd.deprecation/aufs-snapshotter", "aufs is gone")
    info = local.server()
    assert info.pid == os.getpid()
    assert info.pidns == os.stat("/proc/self/ns/pid").st_ino
    assert [d.id for d in info.deprecations] == [
        "io.containerd.deprecation/aufs-snapshotter",
        "io.containerd.deprecation/runtime-v1",
    ]
    assert info.deprecations[1].last_occurrence_ns > 0
    with pytest.raises(InvalidArgumentError):
        local.emit_deprecation("", "x")


def test_plugin_filters(tmp_path: Path) -> None:
    local = Introspection(plugin_set(), tmp_path)

    def ids(*filters: str) -> list[str]:
        return [r.registration.id for r in local.plugins(filters)]

    assert ids() == ["content", "native", "zfs"]
    assert ids("type~=snapshot", "id==content") == ["content", "native", "zfs"]
    assert ids("id==zfs,type==io.containerd.snapshotter.v1") == ["zfs"]
    assert ids("id==zfs,type==io.containerd.content.v1") == []
    assert ids("platforms==x") == []  # only type and id are fields
    with pytest.raises(InvalidArgumentError, match=r">\|=\|<"):
        local.plugins(["id=zfs"])


class _Provider:
    def __init__(self) -> None:
        self.asked: list[tuple[str, bytes]] = []

    async def plugin_info(self, type_url: str, value: bytes) -> tuple[str, bytes]:
        self.asked.append((type_url, value))
        return "example.com/Info", b"answer"


async def test_plugin_info(tmp_path: Path) -> None:
    provider = _Provider()
    regs = [
        PluginResult(
            registration=Registration(type=PluginType.RUNTIME, id="task", init=_none),
            instance=provider,
        ),
        PluginResult(registration=Registration(type=PluginType.CONTENT, id="content", init=_none)),
        PluginResult(
            registration=Registration(type=PluginType.SNAPSHOT, id="zfs", init=_none),
            error=RuntimeError("skip plugin"),
        ),
    ]
    local = Introspection(PluginSet(regs), tmp_path)
    result, extra = await local.plugin_info("io.containerd.runtime.v2", "task", None)
    assert (result.registration.id, extra) == ("task", None)
    assert provider.asked == []
    _, extra = await local.plugin_info("io.containerd.runtime.v2", "task", ("t/Req", b"q"))
    assert extra == ("example.com/Info", b"answer")
    assert provider.asked == [("t/Req", b"q")]
    with pytest.raises(NotFoundError) as nf:
        await local.plugin_info("io.containerd.runtime.v2", "nope", None)
    assert str(nf.value) == "plugin io.containerd.runtime.v2.nope not found: not found"
    with pytest.raises(UnimplementedError):
        await local.plugin_info("io.containerd.content.v1", "content", ("t/Req", b""))
    with pytest.raises(FailedPreconditionError):
        await local.plugin_info("io.containerd.snapshotter.v1", "zfs", ("t/Req", b""))
    # Without options a plugin that failed to load is still described.
    result, _ = await local.plugin_info("io.containerd.snapshotter.v1", "zfs", None)
    assert result.status == "skip"
