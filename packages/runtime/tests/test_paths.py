"""Where the shim keeps its sockets: under the daemon's state directory."""

from __future__ import annotations

import pytest

from pycontainerd.runtime.shim import paths


def test_state_from_the_bundle() -> None:
    bundle = "/var/run/x/state/io.containerd.runtime.v2.task/default/t1"
    assert paths.state_dir(bundle, "/elsewhere/c.sock") == "/var/run/x/state"


def test_state_from_the_address_when_the_bundle_is_elsewhere() -> None:
    assert paths.state_dir("/srv/bundles/t1", "unix:///run/pyc/c.sock") == "/run/pyc"


def test_socket_path_is_stable_and_depends_on_group() -> None:
    a = paths.socket_path("/s", "/c.sock", "default", "")
    assert a == paths.socket_path("/s", "/c.sock", "default", "")
    assert a.startswith("/s/s/")
    assert a != paths.socket_path("/s", "/c.sock", "other", "")
    assert a != paths.socket_path("/s", "/c.sock", "default", "pod1")


def test_too_long_socket_path_is_refused() -> None:
    with pytest.raises(ValueError, match="unix socket path too long"):
        paths.socket_path("/" + "x" * 60, "/c.sock", "default", "")


def test_runc_root() -> None:
    assert paths.runc_root("/st", "ns") == "/st/runc/ns"
