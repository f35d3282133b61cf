"""The ``/v1/metrics`` page assembled in process (the served page is tested in test_daemon)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.daemon import metrics as metrics_mod

if TYPE_CHECKING:
    import pytest


def test_metrics_page_survives_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    class Good:
        def metrics_lines(self) -> list[str]:
            return ["pycontainerd_good_total 3"]

    class Broken:
        def metrics_lines(self) -> list[str]:
            raise RuntimeError("boom")

    page = metrics_mod.render(None, [Broken(), Good()]).decode()
    assert page.endswith("pycontainerd_good_total 3\n")
    assert "process_open_fds" in page
    assert "metrics source failed" in caplog.text
