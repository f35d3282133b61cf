"""The daemon's configuration model (containerd's ``config.toml``, ``version = 2``).

Each TOML table is a frozen dataclass; :func:`decode` turns one parsed TOML
document into a :class:`Config`, checking every key and type and naming the
file and key path in each error; :func:`default_config` gives the built-in
defaults for root or for an ordinary user.

Plugin tables (``[plugins."<uri>"]``) stay free-form mappings: each plugin
decodes its own table. :meth:`Config.plugin_config` lays a plugin's table over
that plugin's defaults key by key.

Importing this module must not import grpc.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final

from pycontainerd.config import paths
from pycontainerd.config._decode import TableReader, show
from pycontainerd.config.duration import parse_duration, parse_duration_ns
from pycontainerd.config.errors import ConfigError

VERSION: Final = 2
"""The only config version pycontainerd reads and writes."""

DEFAULT_MAX_MESSAGE_SIZE: Final = 16 << 20
"""gRPC message size limit in both directions (containerd's 16 MiB)."""

DEFAULT_TIMEOUTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "io.containerd.timeout.shim.cleanup": "5s",
        "io.containerd.timeout.shim.load": "5s",
        "io.containerd.timeout.shim.shutdown": "3s",
        "io.containerd.timeout.task.state": "2s",
    }
)
"""containerd's timeouts (without ``bolt.open``: our metadata store is SQLite)."""

LOG_LEVELS: Final = frozenset(
    {"trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"}
)
LOG_FORMATS: Final = frozenset({"text", "json"})

_UID_MAX: Final = (1 << 32) - 1
_INT32_MAX: Final = (1 << 31) - 1


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcConfig:
    """``[grpc]``: the main API listener.

    The last five keys are pycontainerd's (containerd has none of them) and
    bound what one client may hold of the unix socket's server: calls in
    flight per connection, open connections, seconds to send the HTTP/2
    preface and seconds a connection may stay without a call (0: no limit
    for either), and the largest request header list in bytes.
    """

    address: str
    tcp_address: str = ""
    tcp_tls_ca: str = ""
    tcp_tls_cert: str = ""
    tcp_tls_key: str = ""
    uid: int = 0
    gid: int = 0
    max_recv_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_send_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_concurrent_streams: int = 1000
    max_connections: int = 10_000
    handshake_timeout: int = 10
    idle_timeout: int = 1800
    max_header_list_size: int = 16 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class TtrpcConfig:
    """``[ttrpc]``: the shim-facing listener. Empty address = ``<grpc.address>.ttrpc``."""

    address: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugConfig:
    """``[debug]``: debug socket (empty = off) and logging.

    ``level`` is one of :data:`LOG_LEVELS` or empty (info); ``format`` is
    ``text``, ``json`` or empty (text).
    """

    address: str = ""
    uid: int = 0
    gid: int = 0
    level: str = ""
    format: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsConfig:
    """``[metrics]``: Prometheus endpoint (``host:port``; empty = off)."""

    address: str = ""
    grpc_histogram: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CgroupConfig:
    """``[cgroup]``: the daemon's own cgroup (empty = leave it where it is)."""

    path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyPlugin:
    """``[proxy_plugins.<name>]``: a plugin served by another process over gRPC.

    ``type`` is ``snapshot``, ``content``, ``diff`` or ``sandbox``; the daemon
    decides what it supports and registers ``<type>.<name>``.
    """

    type: str
    address: str
    platform: str = ""
    exports: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamProcessor:
    """``[stream_processors."<id>"]``: an external filter for layer media types."""

    accepts: tuple[str, ...] = ()
    returns: str = ""
    path: str = ""
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """The whole daemon configuration.

    Mappings are read-only views; plugin tables inside them are plain data
    decoded from TOML and must be treated as read-only too.

    ``imports``: in a file as written, the files it imports; in a merged
    config returned by :func:`pycontainerd.config.load`, every file that was
    imported (the main file excluded), in load order.
    """

    version: int = VERSION
    root: str
    state: str
    temp: str = ""
    plugin_dir: str = ""
    disabled_plugins: tuple[str, ...] = ()
    required_plugins: tuple[str, ...] = ()
    oom_score: int = 0
    imports: tuple[str, ...] = ()
    grpc: GrpcConfig
    ttrpc: TtrpcConfig = TtrpcConfig()
    debug: DebugConfig = DebugConfig()
    metrics: MetricsConfig = MetricsConfig()
    cgroup: CgroupConfig = CgroupConfig()
    timeouts: Mapping[str, str] = field(default_factory=lambda: DEFAULT_TIMEOUTS)
    plugins: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    proxy_plugins: Mapping[str, ProxyPlugin] = field(default_factory=lambda: MappingProxyType({}))
    stream_processors: Mapping[str, StreamProcessor] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def effective_ttrpc(self) -> TtrpcConfig:
        """The ttrpc listener to serve: an empty address follows grpc's (and its owner)."""
        if self.ttrpc.address:
            return self.ttrpc
        return TtrpcConfig(
            address=self.grpc.address + ".ttrpc", uid=self.grpc.uid, gid=self.grpc.gid
        )

    def plugin_config(self, uri: str, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The table for plugin ``uri``, laid over ``defaults`` key by key (deep).

        Returns a fresh ``dict`` the caller may keep or change.
        """
        return deep_merge(defaults or {}, self.plugins.get(uri, {}))

    def timeout(self, name: str, default: float | None = None) -> float:
        """The ``[timeouts]`` entry ``name`` in seconds.

        Raises:
            KeyError: ``name`` is not set and no ``default`` was given.
        """
        text = self.timeouts.get(name)
        if text is None:
            if default is None:
                raise KeyError(name)
            return default
        return parse_duration(text)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: tables key by key, anything else replaced.

    Arrays are replaced, not appended: a later file that lists
    ``disabled_plugins`` means exactly that list. Neither input is modified.
    """
    out: dict[str, Any] = copy.deepcopy(dict(base))
    for key, value in override.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def default_config(
    rootless: bool | None = None, plugins: Mapping[str, Mapping[str, Any]] | None = None
) -> Config:
    """The built-in defaults (what an empty config file means).

    Args:
        rootless: Choose the ordinary-user defaults (``True``), root's
            (``False``), or decide from the effective uid (``None``).
        plugins: Registered plugins' default tables by URI, to include in
            ``[plugins]`` (as ``containerd config default`` does).
    """
    frozen_plugins = {uri: _frozen(deep_merge({}, table)) for uri, table in (plugins or {}).items()}
    return Config(
        root=paths.default_root(rootless),
        state=paths.default_state(rootless),
        grpc=GrpcConfig(address=paths.default_address(rootless)),
        plugins=MappingProxyType(frozen_plugins),
    )


def check_plugin_uri(uri: str) -> bool:
    """Whether ``uri`` is a full plugin URI (``io.containerd.<type>.<version>.<id>``).

    The same rule as containerd 1.x's version 2 configs: the ``io.containerd.``
    prefix and at least four dot-separated parts.
    """
    return uri.startswith("io.containerd.") and len(uri.split(".")) >= 4


def _uri_list(
    reader: TableReader, key: str, what: str, default: tuple[str, ...]
) -> tuple[str, ...]:
    uris = reader.string_list(key, default)
    for index, uri in enumerate(uris):
        if not check_plugin_uri(uri):
            raise ConfigError(
                reader.file,
                f"{reader.path(key)}[{index}]",
                f'invalid {what} plugin URI "{uri}" expect io.containerd.x.vx',
            )
    return uris


def _decode_version(reader: TableReader) -> int:
    value = reader.raw("version")
    if value is None:
        # A file without a version is read as version 2. (containerd 1.x read
        # it as version 1, whose bare plugin names fail URI validation here
        # with a message pointing at the offending key.)
        return VERSION
    if isinstance(value, bool) or not isinstance(value, int):
        raise reader.error("version", f"expected an integer, got {show(value)}")
    if value == 1:
        raise reader.error(
            "version",
            "version 1 configs are not supported: set version = 2 and name plugins by "
            'full URI (e.g. [plugins."io.containerd.grpc.v1.cri"], '
            'disabled_plugins = ["io.containerd.snapshotter.v1.btrfs"])',
        )
    if value != VERSION:
        raise reader.error("version", f"unsupported config version {value}, expected {VERSION}")
    return value


def _decode_grpc(reader: TableReader, default: GrpcConfig) -> GrpcConfig:
    address = reader.string("address", default.address)
    if not address:
        raise reader.error("address", "grpc address cannot be empty")
    out = GrpcConfig(
        address=address,
        tcp_address=reader.string("tcp_address", default.tcp_address),
        tcp_tls_ca=reader.string("tcp_tls_ca", default.tcp_tls_ca),
        tcp_tls_cert=reader.string("tcp_tls_cert", default.tcp_tls_cert),
        tcp_tls_key=reader.string("tcp_tls_key", default.tcp_tls_key),
        uid=reader.integer("uid", default.uid, minimum=0, maximum=_UID_MAX),
        gid=reader.integer("gid", default.gid, minimum=0, maximum=_UID_MAX),
        max_recv_message_size=reader.integer(
            "max_recv_message_size", default.max_recv_message_size, minimum=1, maximum=_INT32_MAX
        ),
        max_send_message_size=reader.integer(
            "max_send_message_size", default.max_send_message_size, minimum=1, maximum=_INT32_MAX
        ),
        max_concurrent_streams=reader.integer(
            "max_concurrent_streams", default.max_concurrent_streams, minimum=1, maximum=_INT32_MAX
        ),
        max_connections=reader.integer(
            "max_connections", default.max_connections, minimum=1, maximum=_INT32_MAX
        ),
        handshake_timeout=reader.integer(
            "handshake_timeout", default.handshake_timeout, minimum=0, maximum=86_400
        ),
        idle_timeout=reader.integer(
            "idle_timeout", default.idle_timeout, minimum=0, maximum=_INT32_MAX
        ),
        max_header_list_size=reader.integer(
            "max_header_list_size", default.max_header_list_size, minimum=4096, maximum=_INT32_MAX
        ),
    )
    reader.finish()
    return out


def _decode_ttrpc(reader: TableReader, default: TtrpcConfig) -> TtrpcConfig:
    out = TtrpcConfig(
        address=reader.string("address", default.address),
        uid=reader.integer("uid", default.uid, minimum=0, maximum=_UID_MAX),
        gid=reader.integer("gid", default.gid, minimum=0, maximum=_UID_MAX),
    )
    reader.finish()
    return out


def _decode_debug(reader: TableReader, default: DebugConfig) -> DebugConfig:
    level = reader.string("level", default.level)
    if level and level.lower() not in LOG_LEVELS:
        raise reader.error(
            "level", f'not a valid log level: "{level}" (one of {_choices(LOG_LEVELS)})'
        )
    log_format = reader.string("format", default.format)
    if log_format and log_format not in LOG_FORMATS:
        raise reader.error(
            "format", f'unknown log format: "{log_format}" (one of {_choices(LOG_FORMATS)})'
        )
    out = DebugConfig(
        address=reader.string("address", default.address),
        uid=reader.integer("uid", default.uid, minimum=0, maximum=_UID_MAX),
        gid=reader.integer("gid", default.gid, minimum=0, maximum=_UID_MAX),
        level=level,
        format=log_format,
    )
    reader.finish()
    return out


def _choices(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def _decode_metrics(reader: TableReader, default: MetricsConfig) -> MetricsConfig:
    out = MetricsConfig(
        address=reader.string("address", default.address),
        grpc_histogram=reader.boolean("grpc_histogram", default.grpc_histogram),
    )
    reader.finish()
    return out


def _decode_cgroup(reader: TableReader, default: CgroupConfig) -> CgroupConfig:
    out = CgroupConfig(path=reader.string("path", default.path))
    reader.finish()
    return out


def _decode_timeouts(reader: TableReader, default: Mapping[str, str]) -> Mapping[str, str]:
    out = dict(default)
    for key, value in reader.items():
        if not isinstance(value, str):
            hint = ' (quote dotted names: "io.containerd.timeout.<name>" = "5s")'
            raise reader.error(
                key,
                f'expected a duration string like "5s", got {show(value)}'
                + (hint if isinstance(value, Mapping) else ""),
            )
        try:
            ns = parse_duration_ns(value)
        except ConfigError as exc:
            raise reader.error(key, exc.problem) from None
        if ns < 0:
            raise reader.error(key, f'negative duration "{value}"')
        out[key] = value
    return MappingProxyType(out)


def _decode_plugins(
    reader: TableReader, default: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {
        uri: _frozen(deep_merge({}, t)) for uri, t in default.items()
    }
    for uri, value in reader.items():
        if not check_plugin_uri(uri):
            hint = ""
            if uri == "io" and isinstance(value, Mapping):
                hint = ' (quote the URI: [plugins."io.containerd.<type>.<version>.<id>"])'
            raise reader.error(
                uri, f'invalid plugin key URI "{uri}" expect io.containerd.x.vx{hint}'
            )
        if not isinstance(value, Mapping):
            raise reader.error(uri, f"expected a table, got {show(value)}")
        out[uri] = _frozen(deep_merge(default.get(uri, {}), value))
    return MappingProxyType(out)


def _decode_proxy_plugins(
    reader: TableReader, default: Mapping[str, ProxyPlugin]
) -> Mapping[str, ProxyPlugin]:
    out = dict(default)
    for name in reader.names():
        sub = reader.table(name)
        kind = sub.string("type", "")
        if not kind:
            raise sub.error(
                "type", "a proxy plugin needs a type (snapshot, content, diff, sandbox)"
            )
        address = sub.string("address", "")
        if not address:
            raise sub.error("address", "a proxy plugin needs an address")
        exports = sub.table("exports")
        export_map: dict[str, str] = {}
        for key, value in exports.items():
            if not isinstance(value, str):
                raise exports.error(key, f"expected a string, got {show(value)}")
            export_map[key] = value
        out[name] = ProxyPlugin(
            type=kind,
            address=address,
            platform=sub.string("platform", ""),
            exports=MappingProxyType(export_map),
            capabilities=sub.string_list("capabilities", ()),
        )
        sub.finish()
    return MappingProxyType(out)


def _decode_stream_processors(
    reader: TableReader, default: Mapping[str, StreamProcessor]
) -> Mapping[str, StreamProcessor]:
    out = dict(default)
    for name in reader.names():
        sub = reader.table(name)
        out[name] = StreamProcessor(
            accepts=sub.string_list("accepts", ()),
            returns=sub.string("returns", ""),
            path=sub.string("path", ""),
            args=sub.string_list("args", ()),
            env=sub.string_list("env", ()),
        )
        sub.finish()
    return MappingProxyType(out)


def decode(document: Mapping[str, Any], file: str, defaults: Config) -> Config:
    """Turn one parsed TOML document into a :class:`Config`.

    Keys the document leaves out take their value from ``defaults``; tables
    keyed by name (``plugins``, ``timeouts``, ``proxy_plugins``,
    ``stream_processors``) are laid over the defaults' entries.

    Args:
        document: The output of ``tomllib.load`` (or a merge of several).
        file: The file name to put in error messages.
        defaults: What unset keys mean, usually :func:`default_config`.

    Raises:
        ConfigError: Unknown key, wrong type, bad value or bad plugin URI;
            the message names ``file`` and the key path.
    """
    top = TableReader(file, "", document)
    version = _decode_version(top)
    config = Config(
        version=version,
        root=top.string("root", defaults.root),
        state=top.string("state", defaults.state),
        temp=top.string("temp", defaults.temp),
        plugin_dir=top.string("plugin_dir", defaults.plugin_dir),
        disabled_plugins=_uri_list(top, "disabled_plugins", "disabled", defaults.disabled_plugins),
        required_plugins=_uri_list(top, "required_plugins", "required", defaults.required_plugins),
        oom_score=top.integer("oom_score", defaults.oom_score, minimum=-1000, maximum=1000),
        imports=top.string_list("imports", defaults.imports),
        grpc=_decode_grpc(top.table("grpc"), defaults.grpc),
        ttrpc=_decode_ttrpc(top.table("ttrpc"), defaults.ttrpc),
        debug=_decode_debug(top.table("debug"), defaults.debug),
        metrics=_decode_metrics(top.table("metrics"), defaults.metrics),
        cgroup=_decode_cgroup(top.table("cgroup"), defaults.cgroup),
        timeouts=_decode_timeouts(top.table("timeouts"), defaults.timeouts),
        plugins=_decode_plugins(top.table("plugins"), defaults.plugins),
        proxy_plugins=_decode_proxy_plugins(top.table("proxy_plugins"), defaults.proxy_plugins),
        stream_processors=_decode_stream_processors(
            top.table("stream_processors"), defaults.stream_processors
        ),
    )
    if not config.root:
        raise top.error("root", "root cannot be empty")
    if not config.state:
        raise top.error("state", "state cannot be empty")
    top.finish()
    return config


def to_document(config: Config) -> dict[str, Any]:
    """The TOML document for ``config`` (plain dicts and lists, every key present)."""
    return {
        "version": config.version,
        "root": config.root,
        "state": config.state,
        "temp": config.temp,
        "plugin_dir": config.plugin_dir,
        "disabled_plugins": list(config.disabled_plugins),
        "required_plugins": list(config.required_plugins),
        "oom_score": config.oom_score,
        "imports": list(config.imports),
        "grpc": _fields(config.grpc),
        "ttrpc": _fields(config.ttrpc),
        "debug": _fields(config.debug),
        "metrics": _fields(config.metrics),
        "cgroup": _fields(config.cgroup),
        "timeouts": dict(config.timeouts),
        "plugins": {uri: deep_merge({}, table) for uri, table in config.plugins.items()},
        "proxy_plugins": {
            name: {
                "type": p.type,
                "address": p.address,
                "platform": p.platform,
                "exports": dict(p.exports),
                "capabilities": list(p.capabilities),
            }
            for name, p in config.proxy_plugins.items()
        },
        "stream_processors": {
            name: {
                "accepts": list(s.accepts),
                "returns": s.returns,
                "path": s.path,
                "args": list(s.args),
                "env": list(s.env),
            }
            for name, s in config.stream_processors.items()
        },
    }


def _fields(
    section: GrpcConfig | TtrpcConfig | DebugConfig | MetricsConfig | CgroupConfig,
) -> dict[str, Any]:
    return {f.name: getattr(section, f.name) for f in fields(section)}


__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_TIMEOUTS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "VERSION",
    "CgroupConfig",
    "Config",
    "DebugConfig",
    "GrpcConfig",
    "MetricsConfig",
    "ProxyPlugin",
    "StreamProcessor",
    "TtrpcConfig",
    "check_plugin_uri",
    "decode",
    "deep_merge",
    "default_config",
    "to_document",
]
