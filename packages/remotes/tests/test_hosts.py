"""hosts.toml: lookup, semantics, strict validation, and a mirror that is down."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError
from pycontainerd.remotes.hosts import Capability, HostsConfig, host_dir_candidates
from pycontainerd.remotes.resolver import Resolver
from pycontainerd.remotes.testing import (
    FaultyBlobServer,
    Registry,
    build_image,
    free_port,
    require_registry,
)

if TYPE_CHECKING:
    from pathlib import Path


def write(root: Path, host: str, text: str) -> Path:
    d = root / host
    d.mkdir(parents=True, exist_ok=True)
    (d / "hosts.toml").write_text(text)
    return d / "hosts.toml"


def test_lookup_order(tmp_path: Path) -> None:
    assert host_dir_candidates(tmp_path, "127.0.0.1:5000") == [
        tmp_path / "127.0.0.1_5000_",
        tmp_path / "127.0.0.1:5000",
        tmp_path / "_default",
    ]
    write(tmp_path, "_default", 'server = "https://fallback.example"\n')
    write(tmp_path, "127.0.0.1_5000_", 'server = "http://127.0.0.1:5000"\n')
    conf = HostsConfig(hosts_dir=tmp_path)
    [h] = conf.hosts("127.0.0.1:5000")
    assert (h.scheme, h.host, h.path) == ("http", "127.0.0.1:5000", "/v2")
    [d] = conf.hosts("other.example")
    assert (d.scheme, d.host) == ("https", "fallback.example")


def test_semantics(tmp_path: Path) -> None:
    (tmp_path / "r.example").mkdir()
    (tmp_path / "r.example" / "ca.pem").write_text("")
    write(
        tmp_path,
        "r.example",
        """
server = "https://r.example"
capabilities = ["pull", "resolve", "push"]

[host."https://mirror-b.example/custom/api"]
  capabilities = ["pull"]
  override_path = true
  ca = "ca.pem"
  [host."https://mirror-b.example/custom/api".header]
    x-custom = ["a", "b"]

[host."mirror-a.example"]
  capabilities = ["pull", "resolve"]
  skip_verify = true
""",
    )
    hosts = HostsConfig(hosts_dir=tmp_path).hosts("r.example")
    assert [(h.base_url, h.capabilities) for h in hosts] == [
        ("https://mirror-b.example/custom/api", Capability.PULL),
        ("https://mirror-a.example/v2", Capability.PULL | Capability.RESOLVE),
        ("https://r.example/v2", Capability.ALL),
    ]
    assert hosts[0].headers == (("x-custom", "a"), ("x-custom", "b"))
    assert hosts[0].tls.ca_files == (str(tmp_path / "r.example" / "ca.pem"),)
    assert hosts[1].tls.skip_verify is True


def test_docker_cert_layout(tmp_path: Path) -> None:
    d = tmp_path / "r.example"
    d.mkdir()
    for name in ("ca.crt", "client.cert", "client.key"):
        (d / name).write_text("")
    [h] = HostsConfig(hosts_dir=tmp_path).hosts("r.example")
    assert h.tls.ca_files == (str(d / "ca.crt"),)
    assert h.tls.client_pairs == ((str(d / "client.cert"), str(d / "client.key")),)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('sever = "https://x"\n', r"hosts.toml: sever: unknown key"),
        (
            '[host."https://m"]\n  capabilites = ["pull"]\n',
            r'host."https://m".capabilites: unknown key',
        ),
        ('[host."https://m"]\n  capabilities = ["pul"]\n', r"unknown capability 'pul'"),
        ("skip_verify = 'yes'\n", r"skip_verify: must be a boolean"),
        ("server = \n", r"failed to parse TOML"),
        ('[host."https://m"]\n  client = [["only-one"]]\n', r"invalid pair"),
    ],
)
def test_typos_are_errors(tmp_path: Path, text: str, match: str) -> None:
    file = write(tmp_path, "r.example", text)
    with pytest.raises(InvalidArgumentError, match=match) as info:
        HostsConfig(hosts_dir=tmp_path).hosts("r.example")
    assert str(file) in str(info.value)


def test_effective_hosts_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write(tmp_path, "r.example", 'server = "https://r.example"\n[host."http://m.example"]\n')
    with caplog.at_level(logging.DEBUG, logger="pycontainerd.remotes.hosts"):
        HostsConfig(hosts_dir=tmp_path).hosts("r.example")
    assert "http://m.example/v2 [pull,resolve,push]; https://r.example/v2" in caplog.text


async def test_mirror_down_falls_back(tmp_path: Path) -> None:
    require_registry()
    image = build_image([{"a": b"a"}])
    with Registry(tmp_path / "reg").running() as reg:
        ref = reg.seed("test/m", "v1", image)
        down = f"127.0.0.1:{free_port()}"
        write(
            tmp_path / "certs.d",
            reg.host.replace(":", "_") + "_",
            f'server = "http://{reg.host}"\n'
            f'[host."http://{down}"]\n  capabilities = ["pull", "resolve"]\n',
        )
        async with Resolver(HostsConfig(hosts_dir=tmp_path / "certs.d"), backoff=0.01) as res:
            _, desc = await res.resolve(ref)
            assert desc.digest == image.root.digest
            data = await res.fetcher(ref).fetch_bytes(desc)
            assert data == image.root.data


async def test_mirror_gets_ns_and_is_tried_first(tmp_path: Path) -> None:
    image = build_image([{"a": b"a"}])
    blobs = {b.digest: b for b in [*image.blobs, image.root]}
    mirror = FaultyBlobServer(blobs, {"v1": image.root}).start()
    try:
        write(
            tmp_path,
            "upstream.invalid",
            f'server = "http://127.0.0.1:{free_port()}"\n[host."http://{mirror.host}"]\n',
        )
        async with Resolver(HostsConfig(hosts_dir=tmp_path)) as res:
            ref = "upstream.invalid/test/m:v1"
            _, desc = await res.resolve(ref)
            assert await res.fetcher(ref).fetch_bytes(desc) == image.root.data
        assert mirror.requests
        assert all(r.endswith("?ns=upstream.invalid") for r in mirror.requests)
    finally:
        mirror.stop()


async def test_no_resolve_host(tmp_path: Path) -> None:
    write(tmp_path, "r.example", 'capabilities = ["push"]\n')
    async with Resolver(HostsConfig(hosts_dir=tmp_path)) as res:
        with pytest.raises(NotFoundError, match="no server may resolve"):
            await res.resolve("r.example/x:v1")
