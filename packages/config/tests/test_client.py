from __future__ import annotations

import pytest

from pycontainerd.config import client
from pycontainerd.config.errors import ConfigValueError

ROOT_SOCKET = "/run/pycontainerd/containerd.sock"


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, ROOT_SOCKET),
        ("/tmp/a.sock", {}, "/tmp/a.sock"),
        ("unix:///tmp/a.sock", {}, "/tmp/a.sock"),
        ("unix:rel.sock", {}, "rel.sock"),
        (None, {"CONTAINERD_ADDRESS": "/tmp/env.sock"}, "/tmp/env.sock"),
        (None, {"CONTAINERD_ADDRESS": "unix:///tmp/env.sock"}, "/tmp/env.sock"),
        (None, {"CONTAINERD_ADDRESS": ""}, ROOT_SOCKET),
        ("/tmp/flag.sock", {"CONTAINERD_ADDRESS": "/tmp/env.sock"}, "/tmp/flag.sock"),
    ],
)
def test_resolve_address(flag: str | None, env: dict[str, str], expected: str) -> None:
    assert client.resolve_address(flag, env, rootless=False) == expected


def test_resolve_address_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINERD_ADDRESS", "/tmp/from-os.sock")
    assert client.resolve_address() == "/tmp/from-os.sock"


def test_rootless_default_address(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/nonexistent-runtime-dir")
    address = client.resolve_address(None, {}, rootless=True)
    assert address.endswith("/pycontainerd/containerd.sock")
    assert address != ROOT_SOCKET


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("", "address cannot be empty"),
        ("tcp://127.0.0.1:1234", 'unsupported address scheme "tcp"'),
        ("unix://", 'address "unix://" names no socket path'),
    ],
)
def test_resolve_address_rejects(flag: str, message: str) -> None:
    with pytest.raises(ConfigValueError, match=message):
        client.resolve_address(flag, {}, rootless=False)


def test_bad_address_in_env_is_rejected() -> None:
    with pytest.raises(ConfigValueError, match='scheme "http"'):
        client.resolve_address(None, {"CONTAINERD_ADDRESS": "http://x"}, rootless=False)


@pytest.mark.parametrize(
    ("flag", "env", "expected"),
    [
        (None, {}, "default"),
        ("k8s.io", {}, "k8s.io"),
        (None, {"CONTAINERD_NAMESPACE": "buildkit"}, "buildkit"),
        (None, {"CONTAINERD_NAMESPACE": ""}, "default"),
        ("mine", {"CONTAINERD_NAMESPACE": "buildkit"}, "mine"),
    ],
)
def test_resolve_namespace(flag: str | None, env: dict[str, str], expected: str) -> None:
    assert client.resolve_namespace(flag, env) == expected


def test_empty_namespace_flag_is_rejected() -> None:
    with pytest.raises(ConfigValueError, match="namespace cannot be empty"):
        client.resolve_namespace("", {})


@pytest.mark.parametrize(
    ("flag", "expected"),
    [(None, 10.0), ("5s", 5.0), ("0s", 10.0), (0, 10.0), (2.5, 2.5), ("1m", 60.0)],
)
def test_connect_timeout(flag: str | float | None, expected: float) -> None:
    assert client.resolve_connect_timeout(flag) == expected


@pytest.mark.parametrize(("flag", "message"), [("-1s", "negative"), ("soon", "invalid duration")])
def test_connect_timeout_rejects(flag: str, message: str) -> None:
    with pytest.raises(ConfigValueError, match=message):
        client.resolve_connect_timeout(flag)


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("/run/x.sock", "unix:///run/x.sock"),
        ("unix:///run/x.sock", "unix:///run/x.sock"),
        ("rel.sock", "unix:rel.sock"),
    ],
)
def test_grpc_target(address: str, target: str) -> None:
    assert client.grpc_target(address) == target
