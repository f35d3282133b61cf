"""``ctr sandboxes run/ls/rm`` (our ctr) against our daemon with the runtime and our shim."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.runtime.testing import is_our_shim, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from pycontainerd.daemon.testing import Daemon

ROW = re.compile(r"^(\S+)\s+(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,9})? \+0000 UTC)\s+(\S+)\s*$")

pytestmark = [pytest.mark.system]


def test_sandboxes_run_ls_rm(shim_daemon: Daemon, tmp_path: Path, py: Callable[..., Any]) -> None:
    config = tmp_path / "pod.json"
    config.write_text(json.dumps({"ociVersion": "1.1.0", "annotations": {"k": "v"}}))

    def ctr(*args: str) -> tuple[int, str, str]:
        res = py(shim_daemon.address, *args)
        return res.returncode, res.stdout.decode(), res.stderr.decode()

    assert ctr("sandboxes", "ls") == (0, "ID CREATED RUNTIME \n", "")
    code, out, err = ctr("sandboxes", "run", str(config), "sb1")
    assert (code, out) == (0, "sb1\n"), err + shim_daemon.log()[-3000:]
    code, out, err = ctr("sb", "create", "--runtime", "io.containerd.runc.v2", str(config), "sb2")
    assert (code, out) == (0, "sb2\n"), err
    bundle = shim_daemon.state / "io.containerd.runtime.v2.task" / "default" / "sb1"
    shim_pid = int((bundle / "shim.pid").read_text())
    assert is_our_shim(shim_pid)
    assert json.loads((bundle / "config.json").read_text())["annotations"] == {"k": "v"}

    code, out, _ = ctr("sandbox", "ls")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "RUNTIME"]
    rows = [ROW.match(line) for line in lines[1:]]
    assert all(rows), lines
    assert [(m.group(1), m.group(3)) for m in rows if m] == [
        ("sb1", "io.containerd.runc.v2"),
        ("sb2", "io.containerd.runc.v2"),
    ]
    code, out, _ = ctr("sandboxes", "ls", "--filters", "id==sb2")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["sb2"]

    # info: the store record as JSON, the spec decoded and last.
    code, out, err = ctr("sandboxes", "info", "sb1")
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == [
        "ID",
        "Labels",
        "Runtime",
        "CreatedAt",
        "UpdatedAt",
        "Extensions",
        "Sandboxer",
        "Spec",
    ]
    assert doc["ID"] == "sb1"
    assert doc["Runtime"] == {"Name": "io.containerd.runc.v2", "Options": None}
    assert doc["Sandboxer"] == "shim"
    assert doc["Spec"] == {"ociVersion": "1.1.0", "annotations": {"k": "v"}}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", doc["CreatedAt"])
    assert out.startswith('{\n    "ID": "sb1",\n')
    code, out, _ = ctr("sandboxes", "info", "--spec", "sb1")
    assert (code, json.loads(out)) == (0, {"ociVersion": "1.1.0", "annotations": {"k": "v"}})
    code, out, err = ctr("sandboxes", "info", "nope")
    assert (code, out) == (1, "")
    assert err.startswith("ctr: ")
    assert err.rstrip().endswith("not found")

    # A sandbox id reused: AlreadyExists with upstream's text.
    code, out, err = ctr("sandboxes", "run", str(config), "sb1")
    assert code == 1
    assert err == (
        'ctr: failed to create new sandbox: write error: sandbox bucket "sb1" already exists:'
        " already exists\n"
    )
    code, _, err = ctr("sandboxes", "run", str(tmp_path / "missing.json"), "sb3")
    assert code == 1
    assert "failed to read sandbox config: open " in err

    code, out, err = ctr("sandboxes", "rm", "sb1", "nope")
    assert (code, out) == (0, "")
    assert 'level=info msg="deleted: sb1"' in err
    assert 'level=error msg="failed to load sandbox nope"' in err
    code, out, _ = ctr("s", "ls")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["sb2"]
    assert not bundle.exists()
    wait_for(lambda: not is_our_shim(shim_pid), 20, "sb1's shim to exit")
    code, _, err = ctr("sandboxes", "remove", "sb2")
    assert code == 0
    assert "deleted: sb2" in err


def test_created_prints_like_go_time_string() -> None:
    from pycontainerd.ctr.commands.sandboxes import go_time

    assert go_time(0, 0) == "1970-01-01 00:00:00 +0000 UTC"
    assert go_time(1_800_000_000, 120_000_000) == "2027-01-15 08:00:00.12 +0000 UTC"
    assert go_time(1_800_000_000, 5) == "2027-01-15 08:00:00.000000005 +0000 UTC"


def test_info_times_print_like_go_rfc3339nano() -> None:
    from pycontainerd.ctr.commands.sandboxes import rfc3339nano

    assert rfc3339nano(0, 0) == "1970-01-01T00:00:00Z"
    assert rfc3339nano(1_800_000_000, 120_000_000) == "2027-01-15T08:00:00.12Z"
    assert rfc3339nano(1_800_000_000, 5) == "2027-01-15T08:00:00.000000005Z"
