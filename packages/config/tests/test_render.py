from __future__ import annotations

import dataclasses
import textwrap
import tomllib
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.config import dump, load, loads, render, render_default
from pycontainerd.config.model import default_config

if TYPE_CHECKING:
    from pathlib import Path

PLUGIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "io.containerd.gc.v1.scheduler": {
        "pause_threshold": 0.02,
        "deletion_threshold": 0,
        "schedule_delay": "0s",
        "startup_delay": "100ms",
    },
    "io.containerd.internal.v1.opt": {"path": "/var/lib/pycontainerd/opt"},
    "io.containerd.runtime.v2.task": {"platforms": ["linux/amd64"], "sched_core": False},
}

FULL = """\
version = 2
root = "/srv/pyc"
state = "/run/pyc"
temp = "/tmp/pyc"
plugin_dir = "/usr/lib/pyc"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"]
required_plugins = ["io.containerd.snapshotter.v1.overlayfs"]
oom_score = -999

[grpc]
address = "/run/pyc/pyc.sock"
tcp_address = "127.0.0.1:10010"
tcp_tls_ca = "ca.pem"
tcp_tls_cert = "cert.pem"
tcp_tls_key = "key.pem"
uid = 1
gid = 2
max_recv_message_size = 1024
max_send_message_size = 2048
max_concurrent_streams = 7
max_connections = 8
handshake_timeout = 0
idle_timeout = 9
max_header_list_size = 65536

[ttrpc]
address = "/run/pyc/ttrpc.sock"
uid = 3
gid = 4

[debug]
address = "/run/pyc/debug.sock"
uid = 5
gid = 6
level = "trace"
format = "json"

[metrics]
address = "127.0.0.1:1338"
grpc_histogram = true

[cgroup]
path = "/pyc"

[timeouts]
"io.containerd.timeout.shim.load" = "1m30s"
"io.containerd.timeout.custom" = "250ms"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
BinaryName = "/usr/bin/runc"
SystemdCgroup = true
when = 1979-05-27T07:32:00Z

[proxy_plugins.stargz]
type = "snapshot"
address = "/run/stargz.sock"
platform = "linux/amd64"
exports = { root = "/var/lib/stargz" }
capabilities = ["remote"]

[stream_processors."io.containerd.ocicrypt.decoder.v1.tar"]
accepts = ["application/vnd.oci.image.layer.v1.tar+encrypted"]
returns = "application/vnd.oci.image.layer.v1.tar"
path = "ctd-decoder"
args = ["--decryption-keys-path", "/keys"]
env = ["A=B"]
"""


@pytest.mark.parametrize("rootless", [False, True])
def test_default_renders_and_loads_back_equal(rootless: bool) -> None:
    text = render_default(rootless=rootless)
    assert loads(text, rootless=not rootless) == default_config(rootless=rootless)


def test_default_has_every_section_and_version_2() -> None:
    document = tomllib.loads(render_default(rootless=False))
    assert document["version"] == 2
    assert set(document) == {
        "version", "root", "state", "temp", "plugin_dir", "disabled_plugins",
        "required_plugins", "oom_score", "imports", "grpc", "ttrpc", "debug",
        "metrics", "cgroup", "timeouts", "plugins", "proxy_plugins", "stream_processors",
    }  # fmt: skip
    # containerd prints the top-level values sorted, then the tables sorted
    scalars = [key for key, value in document.items() if not isinstance(value, dict)]
    tables = [key for key, value in document.items() if isinstance(value, dict)]
    assert list(document) == scalars + tables
    assert scalars == sorted(scalars)
    assert tables == sorted(tables)
    assert document["root"] == "/var/lib/pycontainerd"
    assert document["grpc"]["address"] == "/run/pycontainerd/containerd.sock"
    assert document["grpc"]["max_send_message_size"] == 16777216
    assert document["timeouts"]["io.containerd.timeout.shim.cleanup"] == "5s"


def test_default_includes_plugin_defaults() -> None:
    text = render_default(PLUGIN_DEFAULTS, rootless=False)
    assert '[plugins."io.containerd.gc.v1.scheduler"]' in text
    assert tomllib.loads(text)["plugins"] == PLUGIN_DEFAULTS
    assert loads(text, rootless=False) == default_config(rootless=False, plugins=PLUGIN_DEFAULTS)


def test_full_config_round_trips(tmp_path: Path) -> None:
    first = tmp_path / "first.toml"
    first.write_text(FULL)
    config = load(first, rootless=False).config
    assert config.ttrpc.address == "/run/pyc/ttrpc.sock"
    second = tmp_path / "second.toml"
    second.write_text(render(config))
    again = load(second, rootless=False).config
    assert again == config
    assert (
        again.plugins["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]["options"][
            "SystemdCgroup"
        ]
        is True
    )


def test_dump_of_a_merged_config_stands_alone(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text(
        textwrap.dedent("""\
        version = 2
        imports = ["extra.toml"]
        [plugins."io.containerd.gc.v1.scheduler"]
        pause_threshold = 0.5
        """)
    )
    extra = tmp_path / "extra.toml"
    extra.write_text('root = "/from-extra"\n')
    loaded = load(main, rootless=False, plugin_defaults=PLUGIN_DEFAULTS)
    text = dump(loaded)
    assert text.startswith(f"# merged from {main}\n# merged from {extra}\n")
    assert tomllib.loads(text)["imports"] == []
    out = tmp_path / "dumped.toml"
    out.write_text(text)
    again = load(out, rootless=False)
    assert again.files == (out,)
    assert again.config == dataclasses.replace(loaded.config, imports=())
    assert again.config.root == "/from-extra"
    assert again.config.plugins["io.containerd.gc.v1.scheduler"]["pause_threshold"] == 0.5
    assert again.config.plugins["io.containerd.gc.v1.scheduler"]["startup_delay"] == "100ms"


def test_dump_of_a_config_with_plugin_defaults(tmp_path: Path) -> None:
    main = tmp_path / "config.toml"
    main.write_text('[plugins."io.containerd.gc.v1.scheduler"]\npause_threshold = 0.5\n')
    config = load(main, rootless=False).config
    document = tomllib.loads(dump(config, plugins=PLUGIN_DEFAULTS))
    assert document["plugins"]["io.containerd.gc.v1.scheduler"] == {
        **PLUGIN_DEFAULTS["io.containerd.gc.v1.scheduler"],
        "pause_threshold": 0.5,
    }
    assert document["plugins"]["io.containerd.internal.v1.opt"] == {
        "path": "/var/lib/pycontainerd/opt"
    }
