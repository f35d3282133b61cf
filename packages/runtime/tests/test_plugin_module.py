"""The plugin module's wiring and weight."""

from __future__ import annotations

import pytest

from pycontainerd.core.testing import check_import_leaves_out, check_plugin_module
from pycontainerd.runtime import plugin


def test_plugin_module_implements_the_core_hook_with_distinct_registrations() -> None:
    check_plugin_module(plugin)


@pytest.mark.parametrize("heavy", ["grpc", "google.protobuf"])
def test_plugin_module_does_not_import(heavy: str) -> None:
    check_import_leaves_out("pycontainerd.runtime.plugin", heavy)
