"""tcp:// addresses with TLS: the client (async, sync) and our ctr to the daemon's TCP listener."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.address import Address, TLSConfig, parse_tcp, resolve
from pycontainerd.client.client import Client
from pycontainerd.client.remotes.testing import free_port, make_ca
from pycontainerd.core.errdefs import InvalidArgumentError, UnavailableError
from pycontainerd.daemon.testing import Daemon, daemon_env, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

MODULES = ("pycontainerd.daemon.plugin",)


class Rig:
    def __init__(self, base: Path) -> None:
        self.ca = make_ca(base / "ca")
        self.server = self.ca.issue(base / "ca", "server")
        self.client = self.ca.issue(base / "ca", "client", client=True)
        self.rogue_ca = make_ca(base / "rogue")
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"

    def tls(self, *, ca: Path | None = None, client_cert: bool = True) -> TLSConfig:
        cert, key = self.client
        return TLSConfig(
            ca=str(ca or self.ca.cert),
            cert=str(cert) if client_cert else "",
            key=str(key) if client_cert else "",
        )


@pytest.fixture(scope="module")
def rig() -> Iterator[tuple[Rig, Daemon]]:
    with short_tempdir("ptls") as base:
        rig = Rig(base)
        config = (
            "version = 2\n[grpc]\n"
            f'tcp_address = "127.0.0.1:{rig.port}"\n'
            f'tcp_tls_ca = "{rig.ca.cert}"\n'
            f'tcp_tls_cert = "{rig.server[0]}"\n'
            f'tcp_tls_key = "{rig.server[1]}"\n'
        )
        (base / "d").mkdir()
        with Daemon(base / "d", config=config, env=daemon_env(MODULES)) as daemon:
            yield rig, daemon


def test_addresses_parse() -> None:
    assert parse_tcp("tcp://127.0.0.1:1234") == Address(host="127.0.0.1", port=1234)
    assert parse_tcp("tcp://[::1]:5") == Address(host="::1", port=5)
    assert str(parse_tcp("tcp://[::1]:5")) == "tcp://[::1]:5"
    assert parse_tcp("tcp://[::1]:5").grpc_target() == "[::1]:5"
    assert resolve("unix:///run/x.sock") == Address(path="/run/x.sock")
    assert resolve("/run/x.sock").grpc_target() == "unix:///run/x.sock"
    assert resolve(None, {"CONTAINERD_ADDRESS": "tcp://h:1"}) == Address(host="h", port=1)
    for bad in ("tcp://", "tcp://host", "tcp://host:0", "tcp://host:x", "tcp://:80"):
        with pytest.raises(InvalidArgumentError, match="expected tcp://<host>:<port>"):
            parse_tcp(bad)
    with pytest.raises(InvalidArgumentError, match='unsupported address scheme "http"'):
        resolve("http://127.0.0.1:1")
    with pytest.raises(InvalidArgumentError, match="needs both cert and key"):
        TLSConfig(cert="c.pem")
    env = {"CONTAINERD_TLS_CA": "ca.pem"}
    assert TLSConfig.from_env(env) == TLSConfig(ca="ca.pem")
    assert TLSConfig.from_env({}) is None


async def test_async_client_over_tls(rig: tuple[Rig, Daemon]) -> None:
    r, _ = rig
    async with Client(r.address, "tls", tls=r.tls(), connect_timeout=20) as client:
        assert client.address == r.address
        version = await client.version()
        assert version.version


def test_sync_client_over_tls_from_the_environment(
    rig: tuple[Rig, Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pycontainerd.client.sync import Client as SyncClient

    r, _ = rig
    tls = r.tls()
    monkeypatch.setenv("CONTAINERD_ADDRESS", r.address)
    monkeypatch.setenv("CONTAINERD_TLS_CA", tls.ca)
    monkeypatch.setenv("CONTAINERD_TLS_CERT", tls.cert)
    monkeypatch.setenv("CONTAINERD_TLS_KEY", tls.key)
    with SyncClient(connect_timeout=20) as client:
        assert client.version().version
        assert client.introspection().server().uuid


async def test_wrong_ca_is_a_clear_error(rig: tuple[Rig, Daemon]) -> None:
    r, _ = rig
    client = Client(r.address, "tls", tls=r.tls(ca=r.rogue_ca.cert), connect_timeout=20)
    with pytest.raises(UnavailableError) as excinfo:
        await client.connect()
    await client.close()
    text = str(excinfo.value)
    assert text.startswith(f'failed to dial "{r.address}": tls: the daemon\'s certificate')
    assert f"not trusted by the CA {r.rogue_ca.cert}" in text
    assert "--tls-ca" in text


async def test_missing_client_certificate_is_named(rig: tuple[Rig, Daemon]) -> None:
    r, _ = rig
    client = Client(r.address, "tls", tls=r.tls(client_cert=False), connect_timeout=20)
    with pytest.raises(UnavailableError, match="client certificate signed by its CA"):
        await client.connect()
    await client.close()


def _ctr(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
    return subprocess.run(
        [sys.executable, "-m", "pycontainerd.ctr", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


def test_our_ctr_over_tls(rig: tuple[Rig, Daemon]) -> None:
    r, _ = rig
    tls = r.tls()
    flags = ["--tls-ca", tls.ca, "--tls-cert", tls.cert, "--tls-key", tls.key]
    res = _ctr("-a", r.address, *flags, "--connect-timeout", "20s", "version")
    assert res.returncode == 0, res.stderr
    assert "Server:" in res.stdout
    env = {
        "CONTAINERD_ADDRESS": r.address,
        "CONTAINERD_TLS_CA": tls.ca,
        "CONTAINERD_TLS_CERT": tls.cert,
        "CONTAINERD_TLS_KEY": tls.key,
    }
    res = _ctr("plugins", "ls", env=env)
    assert res.returncode == 0, res.stderr
    assert "io.containerd.grpc.v1" in res.stdout
    bad = _ctr("-a", r.address, "--tls-ca", str(r.rogue_ca.cert), "version")
    assert bad.returncode == 1
    assert f'ctr: failed to dial "{r.address}": tls: the daemon\'s certificate' in bad.stderr
