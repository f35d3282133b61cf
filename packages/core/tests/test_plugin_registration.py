"""Registration, InitContext lookups and SkipPluginError."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.core.events import Publisher
from pycontainerd.core.plugin import (
    SKIP_PLUGIN_TEXT,
    Closable,
    ContentStoreProvider,
    GrpcService,
    InitContext,
    MetadataProvider,
    MetricsSource,
    PluginContractError,
    PluginType,
    Registration,
    ShimEnvironment,
    SkipPluginError,
    TtrpcService,
)

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.core.content import Store


async def _init(ic: InitContext) -> object:
    return ic.config


def test_uri_and_defaults() -> None:
    reg = Registration(type=PluginType.SNAPSHOT, id="native", init=_init)
    assert reg.uri == "io.containerd.snapshotter.v1.native"
    assert reg.requires == ()
    assert reg.config == {}


def test_empty_id_rejected() -> None:
    with pytest.raises(ValueError, match=r"^plugin: no id$"):
        Registration(type=PluginType.CONTENT, id="", init=_init)


def test_plugin_type_values_are_containerd_uris() -> None:
    assert PluginType.CONTENT.value == "io.containerd.content.v1"
    assert PluginType("io.containerd.grpc.v1") is PluginType.GRPC


def _ctx(tmp_path: Path, initialized: dict[PluginType, dict[str, object]]) -> InitContext:
    return InitContext(
        root=tmp_path / "root", state=tmp_path / "state", config={}, initialized=initialized
    )


def test_get_single(tmp_path: Path) -> None:
    store = object()
    ic = _ctx(tmp_path, {PluginType.CONTENT: {"content": store}})
    assert ic.get_single(PluginType.CONTENT) is store


def test_get_single_none_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as excinfo:
        _ctx(tmp_path, {}).get_single(PluginType.SNAPSHOT)
    assert str(excinfo.value) == (
        "no plugins registered for io.containerd.snapshotter.v1: not found"
    )


def test_get_single_many_is_lookup_error(tmp_path: Path) -> None:
    ic = _ctx(tmp_path, {PluginType.SNAPSHOT: {"a": 1, "b": 2}})
    with pytest.raises(LookupError, match=r"found \['a', 'b'\]"):
        ic.get_single(PluginType.SNAPSHOT)


def test_get_by_type_and_id(tmp_path: Path) -> None:
    ic = _ctx(tmp_path, {PluginType.SNAPSHOT: {"a": 1, "b": 2}})
    assert dict(ic.get_by_type(PluginType.SNAPSHOT)) == {"a": 1, "b": 2}
    assert ic.get_by_id(PluginType.SNAPSHOT, "b") == 2
    with pytest.raises(
        NotFoundError, match=r"plugin io\.containerd\.snapshotter\.v1\.c: not found"
    ):
        ic.get_by_id(PluginType.SNAPSHOT, "c")
    with pytest.raises(NotFoundError):
        ic.get_by_type(PluginType.CONTENT)


def test_skip_plugin_text() -> None:
    assert SKIP_PLUGIN_TEXT == "skip plugin"
    assert str(SkipPluginError()) == "skip plugin"
    err = SkipPluginError("path /x must be a zfs filesystem")
    assert str(err) == "path /x must be a zfs filesystem: skip plugin"
    assert err.reason == "path /x must be a zfs filesystem"


def test_service_protocols_are_structural() -> None:
    class Svc:
        def register(self, server: object) -> None:
            pass

        def register_ttrpc(self, server: object) -> None:
            pass

        async def aclose(self) -> None:
            pass

    assert isinstance(Svc(), GrpcService)
    assert isinstance(Svc(), TtrpcService)
    assert isinstance(Svc(), Closable)
    assert not isinstance(object(), GrpcService)


def test_metrics_source_is_structural() -> None:
    class Counting:
        def metrics_lines(self) -> list[str]:
            return ["pycontainerd_x_total 1"]

    assert isinstance(Counting(), MetricsSource)
    assert not isinstance(object(), MetricsSource)


class _ContentOnly:
    def content_store(self) -> Store:
        raise NotImplementedError


def test_typed_accessor_returns_an_instance_of_the_contract(tmp_path: Path) -> None:
    md: ContentStoreProvider = _ContentOnly()
    ic = _ctx(tmp_path, {PluginType.METADATA: {"sqlite": md}})
    got: ContentStoreProvider = ic.get_single(PluginType.METADATA, ContentStoreProvider)
    assert got is md
    assert ic.get_by_id(PluginType.METADATA, "sqlite", ContentStoreProvider) is md
    assert dict(ic.get_by_type(PluginType.METADATA, ContentStoreProvider)) == {"sqlite": md}


def test_typed_accessor_names_the_plugin_and_what_it_lacks(tmp_path: Path) -> None:
    ic = _ctx(tmp_path, {PluginType.METADATA: {"sqlite": _ContentOnly()}})
    with pytest.raises(PluginContractError) as excinfo:
        ic.get_single(PluginType.METADATA, MetadataProvider)
    assert str(excinfo.value) == (
        "plugin io.containerd.metadata.v1.sqlite does not implement MetadataProvider: "
        "_ContentOnly lacks container_store(), snapshotter(name)"
    )
    assert excinfo.value.uri == "io.containerd.metadata.v1.sqlite"
    assert excinfo.value.missing == ("container_store()", "snapshotter(name)")
    assert isinstance(excinfo.value, TypeError)
    for lookup in (
        lambda: ic.get_by_id(PluginType.METADATA, "sqlite", MetadataProvider),
        lambda: ic.get_by_type(PluginType.METADATA, MetadataProvider),
        lambda: ic.get_optional(PluginType.METADATA, MetadataProvider),
        lambda: ic.find_by_id(PluginType.METADATA, "sqlite", MetadataProvider),
    ):
        with pytest.raises(PluginContractError, match="lacks container_store"):
            lookup()


def test_typed_accessor_with_a_class_contract(tmp_path: Path) -> None:
    ic = _ctx(tmp_path, {PluginType.EVENT: {"exchange": 42}})
    with pytest.raises(
        PluginContractError,
        match=r"^plugin io\.containerd\.event\.v1\.exchange does not implement str: it is a int$",
    ):
        ic.get_single(PluginType.EVENT, str)
    assert ic.get_single(PluginType.EVENT, int) == 42


def test_optional_lookups_answer_none_when_not_loaded(tmp_path: Path) -> None:
    ic = _ctx(tmp_path, {})
    assert ic.get_optional(PluginType.EVENT, Publisher) is None
    assert ic.find_by_id(PluginType.INTERNAL, "opt", ShimEnvironment) is None
    with pytest.raises(NotFoundError):
        ic.get_single(PluginType.EVENT, Publisher)
