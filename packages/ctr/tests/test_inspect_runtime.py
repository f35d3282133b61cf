"""``ctr plugins inspect-runtime`` (our ctr) against our daemon with our shim.

Checked by hand to print byte for byte what containerd 2.1's Go ``ctr``
prints, against our daemon and against containerd 2.1 (not in CI: only the
1.6 ``ctr`` is installed there, which lacks the command).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from pycontainerd.daemon.testing import Daemon

pytestmark = [pytest.mark.system]


def test_inspect_runtime_prints_the_runtime_info_as_the_2x_ctr(
    shim_daemon: Daemon, py: Callable[..., Any]
) -> None:
    res = py(shim_daemon.address, "plugins", "inspect-runtime")
    assert res.returncode == 0, res.stderr.decode() + shim_daemon.log()[-2000:]
    out = res.stdout.decode()
    info = json.loads(out)
    assert list(info) == ["Name", "Version", "Options", "Features", "Annotations"]
    assert info["Name"] == "io.containerd.pyrunc.v2"  # our shim serves runc.v2 here
    assert list(info["Version"]) == ["Version", "Revision"]
    assert info["Options"] == {}  # runc options, all unset (Go: a struct with omitempty)
    assert info["Features"]["ociVersionMin"]
    assert "rbind" in info["Features"]["mountOptions"]
    assert info["Annotations"] is None
    assert out.startswith('{\n    "Name": ')  # Go's MarshalIndent with four spaces
    assert out.endswith("\n}\n")

    res = py(
        shim_daemon.address,
        "plugins",
        "inspect-runtime",
        "--runc-binary",
        "/usr/bin/runc",
        "--runc-root",
        "/run/x",
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["Options"] == {"binary_name": "/usr/bin/runc", "root": "/run/x"}

    # Other runtime names send no options: the runtime echoes none.
    res = py(
        shim_daemon.address, "plugins", "inspect-runtime", "--runtime", "io.containerd.pyrunc.v2"
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["Options"] is None


def test_inspect_runtime_errors_read_as_the_2x_ctr(
    shim_daemon: Daemon, py: Callable[..., Any]
) -> None:
    res = py(shim_daemon.address, "plugins", "inspect-runtime", "--runtime", "nosuch")
    assert res.returncode == 1
    assert res.stderr.decode().startswith(
        "ctr: failed to resolve runtime path: invalid runtime name nosuch, "
    )
    res = py(
        shim_daemon.address,
        "plugins",
        "inspect-runtime",
        "--runtime",
        "io.x.v2",
        "--runc-binary",
        "r",
    )
    assert (res.returncode, res.stderr.decode()) == (
        1,
        'ctr: specifying runc-binary and runc-systemd-cgroup is only supported for "'
        'io.containerd.runc.v2" runtime\n',
    )
    res = py(shim_daemon.address, "plugins", "inspect-runtime", "--runc-systemd-cgroup")
    assert (res.returncode, res.stderr.decode()) == (
        1,
        "ctr: option --runc-systemd-cgroup requires --cgroup to be set, "
        'e.g. "machine.slice:foo:deadbeef"\n',
    )
    # The shim refuses options of another kind: its -info failure, as a plain error.
    res = py(
        shim_daemon.address,
        "plugins",
        "inspect-runtime",
        "--runtime",
        "io.containerd.pyrunc.v2",
        "--runtime-config-path",
        "/etc/x.toml",
    )
    err = res.stderr.decode()
    assert res.returncode == 1
    assert err.startswith("ctr: failed to run [")
    assert "-info]: exit status 1" in err
    assert not err.rstrip().endswith(": unknown")
