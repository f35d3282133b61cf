"""The shim's command line: Go-style flags and actions."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

import pytest

from pycontainerd.runtime.shim.main import UsageError, main, parse_args

if TYPE_CHECKING:
    from pathlib import Path


def test_upstream_start_invocation_parses() -> None:
    flags = parse_args(
        [
            "-namespace",
            "default",
            "-address",
            "/run/c.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "t1",
            "-debug",
            "start",
        ]
    )
    assert (flags.namespace, flags.address, flags.id, flags.debug, flags.action) == (
        "default",
        "/run/c.sock",
        "t1",
        True,
        "start",
    )
    assert flags.publish_binary == "/usr/bin/containerd"


def test_equals_form_double_dash_and_delete() -> None:
    flags = parse_args(["--namespace=ns", "-id=x", "-bundle", "/b", "delete"])
    assert (flags.namespace, flags.id, flags.bundle, flags.action) == ("ns", "x", "/b", "delete")


def test_no_action_is_serve() -> None:
    assert parse_args(["-namespace", "ns"]).action == ""


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["-bogus", "start"], "flag provided but not defined: -bogus"),
        (["-namespace"], "flag needs an argument: -namespace"),
        (["-namespace", "ns", "explode"], "unknown action"),
        (["-debug=maybe"], 'invalid boolean value "maybe"'),
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str], text: str) -> None:
    with pytest.raises(UsageError, match=text):
        parse_args(argv)


def test_main_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NAMESPACE", raising=False)
    assert main(["-bogus"]) == 2
    assert "flag provided but not defined" in capsys.readouterr().err
    assert main(["-id", "x", "start"]) == 1
    assert "shim namespace cannot be empty" in capsys.readouterr().err
    assert main(["-v"]) == 0
    assert "io.containerd.pyrunc.v2" in capsys.readouterr().out


def test_wrapper_shim_runs_without_a_console_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycontainerd.runtime import testing

    monkeypatch.setattr(testing, "shim_script", lambda: None)
    wrapper = testing.install_shim(tmp_path)
    out = subprocess.run([str(wrapper), "-v"], capture_output=True, text=True, check=True).stdout
    assert "io.containerd.pyrunc.v2" in out
