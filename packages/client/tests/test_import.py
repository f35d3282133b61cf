"""Client tooling stays free of server code (the package is built by a later issue)."""

from __future__ import annotations

import pytest

from pycontainerd.core.testing import check_import_leaves_out


@pytest.mark.parametrize("heavy", ["pycontainerd.daemon", "pycontainerd.metadata", "grpc"])
def test_importing_the_package_loads_no(heavy: str) -> None:
    check_import_leaves_out("pycontainerd.client", heavy)
