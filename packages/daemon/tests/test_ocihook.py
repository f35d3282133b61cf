from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pycontainerd.daemon.ocihook import HookState, OciHookError, prepare, render

if TYPE_CHECKING:
    from pathlib import Path


def bundle(tmp_path: Path, root_path: str = "rootfs") -> Path:
    b = tmp_path / "bundle"
    b.mkdir()
    (b / "config.json").write_text(json.dumps({"root": {"path": root_path}}))
    return b


def state_json(b: Path) -> bytes:
    return json.dumps(
        {"id": "c1", "status": "created", "pid": 4242, "bundle": str(b), "annotations": {"x": "yy"}}
    ).encode()


def test_render_all_functions() -> None:
    st = HookState(
        id="c1", pid=7, bundle="/b", status="running", rootfs="/b/rootfs", annotations={"k": "v"}
    )
    text = (
        '{{id}} {{pid}} {{rootfs}} {{bundle}} {{ annotation "k" }} {{annotation "none"}} {{status}}'
    )
    assert render(text, st) == "c1 7 /b/rootfs /b v  running"
    assert render("plain", st) == "plain"


def test_unknown_function_is_a_clear_error() -> None:
    with pytest.raises(OciHookError, match=r'^template: oci-hook:1: function "bogus" not defined$'):
        render("x {{bogus}}", HookState())
    with pytest.raises(OciHookError, match="wrong number of args for annotation: want 1 got 0"):
        render("{{annotation}}", HookState())
    with pytest.raises(OciHookError, match="unclosed action"):
        render("{{id", HookState())


def test_prepare_renders_args_env_and_rootfs(tmp_path: Path) -> None:
    b = bundle(tmp_path)
    argv, env = prepare(
        ["/bin/echo", "{{id}}", "{{rootfs}}"], state_json(b), {"MYV": "{{id}}-env", "A": "x=y"}
    )
    assert argv == ["/bin/echo", "c1", f"{b}/rootfs"]
    assert env == {"MYV": "c1-env", "A": "x=y"}
    b2 = tmp_path / "abs"
    b2.mkdir()
    (b2 / "config.json").write_text(json.dumps({"root": {"path": "/abs/root"}}))
    argv, _ = prepare(["/x", "{{rootfs}}"], state_json(b2), {})
    assert argv[1] == "/abs/root"


def test_missing_config_json(tmp_path: Path) -> None:
    with pytest.raises(OciHookError, match=r"^open config.json: no such file or directory$"):
        prepare(["/bin/true"], b'{"id": "c"}', {})


# Pants installs no distribution: its sources are importable through
# PEX_EXTRA_SYS_PATH (see the root conftest.py), which a scrubbed environment keeps.
PANTS_IMPORT_PATH = {k: v for k, v in os.environ.items() if k == "PEX_EXTRA_SYS_PATH"}


def run_hook(
    args: list[str], stdin: bytes, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pycontainerd.daemon", "oci-hook", "--", *args],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_oci_hook_command_execs_with_templates(tmp_path: Path) -> None:
    b = bundle(tmp_path)
    res = run_hook(
        [
            "/bin/sh",
            "-c",
            'echo "$1 $2 $3 $4 $5 $6 $MYV"',
            "sh",
            "{{id}}",
            "{{pid}}",
            "{{rootfs}}",
            "{{bundle}}",
            '{{annotation "x"}}',
            "{{status}}",
        ],
        state_json(b),
        env={"PATH": "/usr/bin:/bin", "MYV": "{{id}}-env", **PANTS_IMPORT_PATH},
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"c1 4242 {b}/rootfs {b} yy created c1-env\n"


def test_oci_hook_command_errors(tmp_path: Path) -> None:
    b = bundle(tmp_path)
    res = run_hook(["/bin/echo", "{{bogus}}"], state_json(b))
    assert res.returncode == 1
    assert res.stderr == 'containerd: template: oci-hook:1: function "bogus" not defined\n'
    res = run_hook(["echo", "hi"], state_json(b))  # no PATH lookup
    assert res.returncode == 1
    assert res.stderr == "containerd: no such file or directory\n"
