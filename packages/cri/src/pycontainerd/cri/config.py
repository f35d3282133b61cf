"""The ``[plugins."io.containerd.grpc.v1.cri"]`` table: keys, defaults, validation.

The keys are containerd 1.6/1.7's names for what this distribution uses.
Unknown keys are ignored (containerd accepts many more, and a config written
for it must load); a known key with a value of the wrong type or out of range
is a :class:`~pycontainerd.config.errors.ConfigError` naming the key.

Importing this module must not import grpc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.config.duration import parse_duration
from pycontainerd.config.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

URI: Final = "io.containerd.grpc.v1.cri"
TABLE: Final = f'plugins."{URI}"'
DEFAULT_SANDBOX_IMAGE: Final = "registry.k8s.io/pause:3.6"
RUNC_V2: Final = "io.containerd.runc.v2"
CGROUP_DRIVERS: Final = ("systemd", "cgroupfs")

DEFAULT_CONFIG: Final[dict[str, object]] = {
    "sandbox_image": DEFAULT_SANDBOX_IMAGE,
    "max_container_log_line_size": 16 * 1024,
    "restrict_oom_score_adj": False,
    "disable_cgroup": False,
    "enable_selinux": False,
    "disable_apparmor": False,
    "stream_server_address": "127.0.0.1",
    "stream_server_port": "0",
    "enable_tls_streaming": False,
    "stream_idle_timeout": "4h",
    "image_pull_progress_timeout": "5m0s",
    "x509_key_pair_streaming": {"tls_cert_file": "", "tls_key_file": ""},
    "cni": {"bin_dir": "/opt/cni/bin", "conf_dir": "/etc/cni/net.d", "max_conf_num": 1},
    "registry": {"config_path": "", "mirrors": {}, "configs": {}},
    "containerd": {
        "snapshotter": "overlayfs",
        "default_runtime_name": "runc",
        "runtimes": {"runc": {"runtime_type": RUNC_V2, "options": {}}},
    },
}


@dataclass(frozen=True, slots=True)
class Runtime:
    """One ``containerd.runtimes.<name>`` entry."""

    name: str
    runtime_type: str = RUNC_V2
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def systemd_cgroup(self) -> bool:
        """``options.SystemdCgroup``: the runc systemd cgroup driver."""
        return bool(self.options.get("SystemdCgroup", False))


@dataclass(frozen=True, slots=True)
class CniConfig:
    """``cni``: where the network configs and the plugin binaries are."""

    bin_dir: str = "/opt/cni/bin"
    conf_dir: str = "/etc/cni/net.d"
    max_conf_num: int = 1


@dataclass(frozen=True, slots=True)
class RegistryHostConfig:
    """``registry.configs.<host>``: credentials and TLS for one registry host."""

    username: str = ""
    password: str = ""
    auth: str = ""
    """base64 ``user:password``."""
    identity_token: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class CriConfig:
    """The CRI plugin's configuration, validated."""

    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    snapshotter: str = "overlayfs"
    default_runtime_name: str = "runc"
    runtimes: Mapping[str, Runtime] = field(default_factory=lambda: {"runc": Runtime("runc")})
    cni: CniConfig = field(default_factory=CniConfig)
    registry_config_path: str = ""
    registry_mirrors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    registry_configs: Mapping[str, RegistryHostConfig] = field(default_factory=dict)
    max_container_log_line_size: int = 16 * 1024
    restrict_oom_score_adj: bool = False
    disable_cgroup: bool = False
    enable_selinux: bool = False
    disable_apparmor: bool = False
    stream_server_address: str = "127.0.0.1"
    stream_server_port: str = "0"
    enable_tls_streaming: bool = False
    stream_idle_timeout: float = 4 * 3600.0
    """Seconds a streaming connection may be idle (0: no limit)."""
    image_pull_progress_timeout: float = 300.0
    """Seconds a pull may download nothing before it is cancelled (0: no limit)."""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    """``x509_key_pair_streaming``: the TLS key pair (both unset: a self-signed one)."""

    @property
    def default_runtime(self) -> Runtime:
        return self.runtimes[self.default_runtime_name]

    def runtime_for(self, handler: str) -> Runtime:
        """The runtime a RuntimeHandler names ("" = the default).

        Raises:
            KeyError: no such runtime is configured.
        """
        return self.runtimes[handler or self.default_runtime_name]

    @property
    def cgroup_driver(self) -> str:
        """``systemd`` when the default runtime sets ``SystemdCgroup``, else ``cgroupfs``."""
        return "systemd" if self.default_runtime.systemd_cgroup else "cgroupfs"

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> CriConfig:
        """Validate the plugin's (defaults-merged) table.

        Raises:
            ConfigError: a known key has a wrong type or value; the message
                names the key under ``plugins."io.containerd.grpc.v1.cri"``.
        """
        r = _Reader(raw, "")
        cni = r.table("cni")
        registry = r.table("registry")
        ctd = r.table("containerd")
        runtimes: dict[str, Runtime] = {}
        for name, value in ctd.table("runtimes").items():
            rt = _Reader(value, ctd.key(f"runtimes.{name}"), expect_table=True)
            runtimes[name] = Runtime(
                name=name,
                runtime_type=rt.string("runtime_type", RUNC_V2) or RUNC_V2,
                options=dict(rt.table("options").raw),
            )
            systemd = runtimes[name].options.get("SystemdCgroup", False)
            if not isinstance(systemd, bool):
                rt.table("options").fail("SystemdCgroup", "expected a boolean", systemd)
        default = ctd.string("default_runtime_name", "runc")
        if default not in runtimes:
            ctd.fail(
                "default_runtime_name",
                f"names no runtime in containerd.runtimes (have {sorted(runtimes)})",
                default,
            )
        mirrors: dict[str, tuple[str, ...]] = {}
        for host, value in registry.table("mirrors").items():
            m = _Reader(value, registry.key(f"mirrors.{host}"), expect_table=True)
            mirrors[host] = tuple(m.strings("endpoint"))
        configs: dict[str, RegistryHostConfig] = {}
        for host, value in registry.table("configs").items():
            c = _Reader(value, registry.key(f"configs.{host}"), expect_table=True)
            auth, tls = c.table("auth"), c.table("tls")
            configs[host] = RegistryHostConfig(
                username=auth.string("username", ""),
                password=auth.string("password", ""),
                auth=auth.string("auth", ""),
                identity_token=auth.string("identitytoken", ""),
                ca_file=tls.string("ca_file", ""),
                cert_file=tls.string("cert_file", ""),
                key_file=tls.string("key_file", ""),
                insecure_skip_verify=tls.boolean("insecure_skip_verify", False),
            )
        port = r.raw.get("stream_server_port", "0")
        if isinstance(port, int) and not isinstance(port, bool):
            port = str(port)
        if not isinstance(port, str) or not port.isdigit() or int(port) > 65535:
            r.fail("stream_server_port", "expected a port number from 0 to 65535", port)
        idle = _duration(r, "stream_idle_timeout", "4h", "4h or 30m")
        progress = _duration(r, "image_pull_progress_timeout", "5m0s", "5m or 30s")
        tls = r.table("x509_key_pair_streaming")
        max_conf = cni.integer("max_conf_num", 1)
        if max_conf < 0:
            cni.fail("max_conf_num", "must not be negative", max_conf)
        line_size = r.integer("max_container_log_line_size", 16 * 1024)
        image = r.string("sandbox_image", DEFAULT_SANDBOX_IMAGE)
        if not image:
            r.fail("sandbox_image", "must not be empty", image)
        return cls(
            sandbox_image=image,
            snapshotter=ctd.string("snapshotter", "overlayfs") or "overlayfs",
            default_runtime_name=default,
            runtimes=runtimes,
            cni=CniConfig(
                bin_dir=cni.string("bin_dir", "/opt/cni/bin"),
                conf_dir=cni.string("conf_dir", "/etc/cni/net.d"),
                max_conf_num=max_conf,
            ),
            registry_config_path=registry.string("config_path", ""),
            registry_mirrors=mirrors,
            registry_configs=configs,
            max_container_log_line_size=line_size,
            restrict_oom_score_adj=r.boolean("restrict_oom_score_adj", False),
            disable_cgroup=r.boolean("disable_cgroup", False),
            enable_selinux=r.boolean("enable_selinux", False),
            disable_apparmor=r.boolean("disable_apparmor", False),
            stream_server_address=r.string("stream_server_address", "127.0.0.1"),
            stream_server_port=port,
            enable_tls_streaming=r.boolean("enable_tls_streaming", False),
            stream_idle_timeout=idle,
            image_pull_progress_timeout=progress,
            tls_cert_file=tls.string("tls_cert_file", ""),
            tls_key_file=tls.string("tls_key_file", ""),
        )


def _duration(r: _Reader, key: str, default: str, example: str) -> float:
    """The non-negative duration ``key`` of table reader ``r``, in seconds."""
    text = r.string(key, default)
    seconds = 0.0
    try:
        seconds = parse_duration(text)
    except ConfigError:
        r.fail(key, f"expected a duration such as {example}", text)
    if seconds < 0:
        r.fail(key, "must not be negative", text)
    return float(seconds)


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


class _Reader:
    """Typed access to one table, with errors naming the full key."""

    def __init__(self, raw: object, prefix: str, *, expect_table: bool = False) -> None:
        if not isinstance(raw, dict):
            if expect_table:
                raise ConfigError(
                    "", f"{TABLE}.{prefix}", f"expected a table, got {_describe(raw)}"
                )
            raw = {}
        self.raw: dict[str, Any] = raw
        self.prefix = prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, problem: str, value: object) -> None:
        raise ConfigError("", f"{TABLE}.{self.key(name)}", f"{problem}, got {_describe(value)}")

    def items(self) -> list[tuple[str, Any]]:
        return list(self.raw.items())

    def table(self, name: str) -> _Reader:
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            self.fail(name, "expected a table", value)
        return _Reader(value, self.key(name))

    def string(self, name: str, default: str) -> str:
        value = self.raw.get(name, default)
        if not isinstance(value, str):
            self.fail(name, "expected a string", value)
        return str(value)

    def strings(self, name: str) -> list[str]:
        value = self.raw.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, "expected an array of strings", value)
        return list(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if not isinstance(value, bool):
            self.fail(name, "expected a boolean", value)
        return bool(value)

    def integer(self, name: str, default: int) -> int:
        value = self.raw.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(name, "expected an integer", value)
        return int(value)
