"""runc's answers and runc options, as upstream's runc shim reads them."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import any_pb2

from pycontainerd.api.types.runc.options import oci_pb2
from pycontainerd.core.errdefs import NotFoundError, UnknownError
from pycontainerd.runtime.shim.runc import RuncError, RuncOptions, _exec_error, kill_error


@pytest.mark.parametrize(
    ("runc_says", "message"),
    [
        ("container not running", "process already finished"),
        ("kill: No such process", "process already finished"),
        ('container "x" does not exist', "no such container"),
    ],
)
def test_kill_answers_for_gone_processes_are_not_found(runc_says: str, message: str) -> None:
    err = kill_error(RuncError(runc_says))
    assert isinstance(err, NotFoundError)
    assert str(err) == f"{message}: not found"


def test_other_kill_failures_are_unknown() -> None:
    err = kill_error(RuncError("permission denied"))
    assert type(err) is UnknownError
    assert err.message == "unknown error after kill: permission denied"


def test_a_missing_runc_binary_has_gos_exec_text() -> None:
    missing = FileNotFoundError(2, "No such file or directory")
    assert _exec_error("no-runc", missing) == (
        'exec: "no-runc": executable file not found in $PATH'
    )
    assert _exec_error("/opt/no-runc", missing) == (
        "fork/exec /opt/no-runc: no such file or directory"
    )


def test_runc_options_from_an_any() -> None:
    fields: dict[str, Any] = {
        "binary_name": "crun",
        "systemd_cgroup": True,
        "no_pivot_root": True,
        "no_new_keyring": True,
        "io_uid": 1000,
        "io_gid": 1001,
    }
    opts = oci_pb2.Options(**fields)
    parsed = RuncOptions.parse(
        any_pb2.Any(type_url="containerd.runc.v1.Options", value=opts.SerializeToString()),
        "/run/x/runc/ns",
    )
    assert parsed == RuncOptions(root="/run/x/runc/ns", **fields)
    assert parsed.create_flags() == ["--no-pivot", "--no-new-keyring"]
    assert parsed.io_owner() == (1000, 1001)
    plain = RuncOptions.parse(None, "/root")
    assert (plain.binary_name, plain.create_flags(), plain.io_owner()) == ("runc", [], None)
