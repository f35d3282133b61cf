from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pycontainerd.config import paths
from pycontainerd.config.model import DEFAULT_MAX_MESSAGE_SIZE, default_config

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    data = tmp_path / "data"
    runtime = tmp_path / "runtime"
    conf = tmp_path / "conf"
    for d in (data, runtime, conf):
        d.mkdir(mode=0o700)
        d.chmod(0o700)  # a runtime dir must be private, whatever the umask
    monkeypatch.setenv("XDG_DATA_HOME", str(data))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(conf))
    return data, runtime, conf


def test_root_defaults() -> None:
    config = default_config(rootless=False)
    assert config.version == 2
    assert config.root == "/var/lib/pycontainerd"
    assert config.state == "/run/pycontainerd"
    assert config.grpc.address == "/run/pycontainerd/containerd.sock"
    assert config.grpc.uid == 0
    assert config.grpc.max_recv_message_size == DEFAULT_MAX_MESSAGE_SIZE == 16 * 1024 * 1024
    # the unix socket server's limits (pycontainerd's own keys)
    assert config.grpc.max_concurrent_streams == 1000
    assert config.grpc.max_connections == 10_000
    assert (config.grpc.handshake_timeout, config.grpc.idle_timeout) == (10, 1800)
    assert config.grpc.max_header_list_size == 16 << 20
    assert config.debug.address == ""
    assert config.metrics.address == ""
    assert config.ttrpc.address == ""
    assert config.oom_score == 0
    assert config.disabled_plugins == ()
    assert dict(config.plugins) == {}
    assert paths.default_config_path(rootless=False) == "/etc/pycontainerd/config.toml"


def test_user_defaults_follow_platformdirs(user_dirs: tuple[Path, Path, Path]) -> None:
    data, runtime, conf = user_dirs
    config = default_config(rootless=True)
    assert config.root == str(data / "pycontainerd")
    assert config.state == str(runtime / "pycontainerd")
    assert config.grpc.address == str(runtime / "pycontainerd" / "containerd.sock")
    assert paths.default_config_path(rootless=True) == str(conf / "pycontainerd" / "config.toml")


def test_user_defaults_without_runtime_dir_do_not_warn(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest turns warnings into errors here; platformdirs warns when it
    # falls back from a missing XDG_RUNTIME_DIR, and that must not leak.
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    state = paths.default_state(rootless=True)
    assert state.endswith("pycontainerd")
    assert state != paths.SYSTEM_STATE


def test_rootless_none_follows_effective_uid(
    monkeypatch: pytest.MonkeyPatch, user_dirs: tuple[Path, Path, Path]
) -> None:
    _, runtime, _ = user_dirs
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_config().root == "/var/lib/pycontainerd"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_config().state == str(runtime / "pycontainerd")


def test_ttrpc_follows_grpc_when_unset() -> None:
    config = default_config(rootless=False)
    ttrpc = config.effective_ttrpc
    assert ttrpc.address == "/run/pycontainerd/containerd.sock.ttrpc"
    assert (ttrpc.uid, ttrpc.gid) == (config.grpc.uid, config.grpc.gid)


def test_timeouts_defaults_in_seconds() -> None:
    config = default_config(rootless=False)
    assert config.timeout("io.containerd.timeout.shim.shutdown") == 3.0
    assert config.timeout("io.containerd.timeout.task.state") == 2.0
    assert config.timeout("nope", default=1.5) == 1.5
    with pytest.raises(KeyError):
        config.timeout("nope")


def test_plugin_defaults_are_copied_not_shared() -> None:
    table = {"policy": {"a": 1}}
    config = default_config(rootless=False, plugins={"io.containerd.gc.v1.scheduler": table})
    table["policy"]["a"] = 2
    assert config.plugins["io.containerd.gc.v1.scheduler"] == {"policy": {"a": 1}}
    mine = config.plugin_config("io.containerd.gc.v1.scheduler")
    mine["policy"]["a"] = 3
    assert config.plugins["io.containerd.gc.v1.scheduler"] == {"policy": {"a": 1}}
