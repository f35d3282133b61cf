"""The ``[plugins."io.containerd.grpc.v1.cri"]`` table: defaults, values, errors naming the key."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from pycontainerd.config.errors import ConfigError
from pycontainerd.config.model import deep_merge
from pycontainerd.cri.config import DEFAULT_CONFIG, CriConfig

TABLE = 'plugins."io.containerd.grpc.v1.cri"'


def _load(text: str) -> CriConfig:
    user = tomllib.loads(text)
    merged: dict[str, Any] = deep_merge(copy.deepcopy(DEFAULT_CONFIG), user)
    return CriConfig.from_mapping(merged)


def test_defaults_are_containerds() -> None:
    c = _load("")
    assert c.sandbox_image == "registry.k8s.io/pause:3.6"
    assert (c.cni.bin_dir, c.cni.conf_dir, c.cni.max_conf_num) == (
        "/opt/cni/bin",
        "/etc/cni/net.d",
        1,
    )
    assert c.snapshotter == "overlayfs"
    assert c.default_runtime.name == "runc"
    assert c.default_runtime.runtime_type == "io.containerd.runc.v2"
    assert c.cgroup_driver == "cgroupfs"
    assert c.max_container_log_line_size == 16384
    assert c.restrict_oom_score_adj is False
    assert (c.stream_server_address, c.stream_server_port) == ("127.0.0.1", "0")
    assert c.image_pull_progress_timeout == 300.0  # containerd 1.7's "5m0s"


def test_a_containerd_1x_table_is_read() -> None:
    c = _load(
        """
        sandbox_image = "registry.k8s.io/pause:3.9"
        restrict_oom_score_adj = true
        max_container_log_line_size = 8192
        stream_server_port = 10010
        some_key_we_do_not_know = "ignored"
        [cni]
        bin_dir = "/usr/lib/cni"
        conf_dir = "/tmp/net.d"
        max_conf_num = 0
        [registry.mirrors."docker.io"]
        endpoint = ["http://127.0.0.1:5000"]
        [containerd]
        default_runtime_name = "crun"
        [containerd.runtimes.crun]
        runtime_type = "io.containerd.runc.v2"
        [containerd.runtimes.crun.options]
        SystemdCgroup = true
        BinaryName = "crun"
        """
    )
    assert c.sandbox_image == "registry.k8s.io/pause:3.9"
    assert c.restrict_oom_score_adj is True
    assert c.max_container_log_line_size == 8192
    assert c.stream_server_port == "10010"
    assert c.cni.bin_dir == "/usr/lib/cni"
    assert c.cni.max_conf_num == 0
    assert c.registry_mirrors == {"docker.io": ("http://127.0.0.1:5000",)}
    assert sorted(c.runtimes) == ["crun", "runc"]
    assert c.runtime_for("").name == "crun"
    assert c.runtime_for("runc").name == "runc"
    assert c.cgroup_driver == "systemd"
    with pytest.raises(KeyError):
        c.runtime_for("kata")


def test_image_pull_progress_timeout_is_a_duration_and_0_disables() -> None:
    def timeout(text: str) -> float:
        config = _load(f'image_pull_progress_timeout = "{text}"')
        return config.image_pull_progress_timeout

    assert timeout("1m30s") == 90
    assert timeout("0s") == 0
    for bad, problem in (("soon", "expected a duration"), ("-1s", "must not be negative")):
        with pytest.raises(ConfigError) as info:
            _load(f'image_pull_progress_timeout = "{bad}"')
        assert info.value.key == f"{TABLE}.image_pull_progress_timeout"
        assert problem in info.value.problem


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("sandbox_image = 3", "sandbox_image", "expected a string, got 3"),
        ('sandbox_image = ""', "sandbox_image", 'must not be empty, got ""'),
        ('cni = "x"', "cni", 'expected a table, got "x"'),
        ('[cni]\nmax_conf_num = "1"', "cni.max_conf_num", 'expected an integer, got "1"'),
        ("[cni]\nmax_conf_num = -1", "cni.max_conf_num", "must not be negative, got -1"),
        (
            'restrict_oom_score_adj = "yes"',
            "restrict_oom_score_adj",
            'expected a boolean, got "yes"',
        ),
        ("stream_server_port = 70000", "stream_server_port", "expected a port number"),
        (
            '[containerd]\ndefault_runtime_name = "kata"',
            "containerd.default_runtime_name",
            "names no runtime in containerd.runtimes",
        ),
        (
            "[containerd.runtimes.runc.options]\nSystemdCgroup = 1",
            "containerd.runtimes.runc.options.SystemdCgroup",
            "expected a boolean, got 1",
        ),
        (
            '[registry.mirrors."docker.io"]\nendpoint = "http://x"',
            "registry.mirrors.docker.io.endpoint",
            "expected an array of strings",
        ),
        (
            '[registry.configs."r.example:5000".tls]\ninsecure_skip_verify = "yes"',
            "registry.configs.r.example:5000.tls.insecure_skip_verify",
            'expected a boolean, got "yes"',
        ),
        (
            '[registry.configs."r.example".auth]\nusername = 1',
            "registry.configs.r.example.auth.username",
            "expected a string, got 1",
        ),
    ],
)
def test_bad_values_name_the_key(text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(text)
    assert info.value.key == f"{TABLE}.{key}"
    assert problem in info.value.problem
    assert str(info.value).endswith(": invalid argument")


def test_registry_configs_are_read() -> None:
    cfg = _load(
        '[registry.configs."r.example:5000".auth]\nusername = "u"\npassword = "p"\n'
        '[registry.configs."r.example:5000".tls]\nca_file = "ca.pem"\n'
        "insecure_skip_verify = true\n"
    )
    host = cfg.registry_configs["r.example:5000"]
    assert (host.username, host.password, host.ca_file) == ("u", "p", "ca.pem")
    assert host.insecure_skip_verify
    assert _load("").registry_configs == {}
