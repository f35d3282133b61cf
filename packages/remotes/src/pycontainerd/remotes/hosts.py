"""Registry hosts: which servers serve a registry, and how to reach them (``hosts.toml``).

Lookup follows containerd's ``config.HostDirFromRoot``: for the registry host
``h`` (``127.0.0.1:5000``) the first existing directory of
``<root>/127.0.0.1_5000_``, ``<root>/<h>`` and ``<root>/_default`` is used.
In it, ``hosts.toml`` lists the servers; without one, Docker's certificate
layout (``*.crt`` CAs, ``*.cert`` with a same-named ``*.key``) configures TLS
for the upstream server.

``hosts.toml`` semantics are upstream's: the ``[host."<url>"]`` tables are
tried in file order, the top-level ``server`` last; a URL without a scheme is
``https``; ``/v2`` is appended to the path unless ``override_path``;
``capabilities`` (``pull``, ``resolve``, ``push``) default to all three;
``ca`` and ``client`` paths are relative to the directory.

Unlike upstream, which logs a decoding error and silently falls back to the
certificate layout, a file that does not parse, has an unknown key or a
value of the wrong type is an ``InvalidArgumentError`` naming the file and
the key. The effective host list is logged at debug level.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

HOSTS_FILE: Final = "hosts.toml"
DEFAULT_DIR: Final = "_default"
DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_SERVER: Final = "registry-1.docker.io"

_HOST_KEYS: Final = frozenset(
    {"capabilities", "ca", "client", "skip_verify", "header", "override_path", "dial_timeout"}
)
_TOP_KEYS: Final = _HOST_KEYS | {"server", "host"}


class Capability(enum.Flag):
    """What a host may be used for."""

    PULL = enum.auto()
    RESOLVE = enum.auto()
    PUSH = enum.auto()
    ALL = PULL | RESOLVE | PUSH


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSOptions:
    """TLS settings of one host (or the defaults from ``ctr``'s flags).

    Attributes:
        ca_files: PEM files with CA certificates, trusted besides the system's.
        client_pairs: ``(certificate, key)`` files; ``key`` empty when the
            certificate file holds the key too.
        skip_verify: do not verify the server certificate (``None``: unset).
    """

    ca_files: tuple[str, ...] = ()
    client_pairs: tuple[tuple[str, str], ...] = ()
    skip_verify: bool | None = None

    @property
    def is_set(self) -> bool:
        """Whether anything differs from the system defaults."""
        return bool(self.ca_files or self.client_pairs or self.skip_verify is not None)

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context with the system roots plus these settings.

        Raises:
            InvalidArgumentError: a CA or client certificate cannot be loaded.
        """
        ctx = ssl.create_default_context()
        for ca in self.ca_files:
            try:
                ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                msg = f"unable to load CA cert {ca!r}: {exc}"
                raise InvalidArgumentError(msg) from None
        for cert, key in self.client_pairs:
            try:
                ctx.load_cert_chain(cert, key or None)
            except (OSError, ssl.SSLError) as exc:
                msg = f"failed to load X509 key pair {cert!r}: {exc}"
                raise InvalidArgumentError(msg) from None
        if self.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryHost:
    """One server that can serve a registry (containerd's ``docker.RegistryHost``).

    Attributes:
        scheme: ``https`` or ``http``.
        host: ``name[:port]`` of the server.
        path: API root, normally ``/v2``.
        capabilities: what the server may be used for.
        headers: extra request headers (a name may repeat).
        tls: TLS settings.
        http_fallback: try HTTPS, and plain HTTP if the server does not speak TLS.
    """

    scheme: str
    host: str
    path: str = "/v2"
    capabilities: Capability = Capability.ALL
    headers: tuple[tuple[str, str], ...] = ()
    tls: TLSOptions = field(default_factory=TLSOptions)
    http_fallback: bool = False

    @property
    def base_url(self) -> str:
        """``scheme://host/path``."""
        return f"{self.scheme}://{self.host}{self.path}"

    def __str__(self) -> str:
        caps = ",".join(
            c.name.lower() for c in (Capability.PULL, Capability.RESOLVE, Capability.PUSH)
            if c in self.capabilities and c.name
        )  # fmt: skip
        return f"{self.base_url} [{caps}]"


def host_directory(host: str) -> str:
    """``name:port`` -> ``name_port_`` (the directory name upstream looks for first)."""
    idx = host.rfind(":")
    if idx > 0:
        return f"{host[:idx]}_{host[idx + 1 :]}_"
    return host


def host_dir_candidates(root: Path, host: str) -> list[Path]:
    """The directories looked up for ``host``, in order."""
    out = []
    special = host_directory(host)
    if special != host:
        out.append(root / special)
    out += [root / host, root / DEFAULT_DIR]
    return out


def find_host_dir(root: Path, host: str) -> Path | None:
    """The first existing directory for ``host`` under ``root``."""
    for candidate in host_dir_candidates(root, host):
        if candidate.is_dir():
            return candidate
    return None


def is_localhost(host: str) -> bool:
    """Whether ``host`` (with optional port) names the local machine."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class _Reader:
    """Type-checked access to one TOML table, naming the file and key in errors."""

    def __init__(self, file: Path, table: Mapping[str, object], where: str) -> None:
        self.file = file
        self.table = table
        self.where = where

    def fail(self, key: str, problem: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{self.file}: {self.where}{key}: {problem}")

    def check_keys(self, allowed: frozenset[str]) -> None:
        for key in self.table:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(key, f"unknown key (expected one of {hint})")

    def string_list(self, key: str, *, allow_pairs: bool = False) -> list[str | list[str]]:
        value = self.table.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list):
            raise self.fail(key, f"must be a string or a list, not {type(value).__name__}")
        out: list[str | list[str]] = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif allow_pairs and isinstance(item, list) and all(isinstance(i, str) for i in item):
                if len(item) != 2:
                    raise self.fail(key, f"invalid pair {item!r} (want [cert, key])")
                out.append([str(i) for i in item])
            else:
                raise self.fail(key, f"invalid entry {item!r}")
        return out


def _abs(path: str, base: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else base / p)


def _parse_entry(  # noqa: PLR0912, PLR0915 - one check per hosts.toml field
    reader: _Reader, server: str, base_dir: Path
) -> tuple[str, str, str, Capability, tuple[tuple[str, str], ...], TLSOptions]:
    table = reader.table
    override = table.get("override_path", False)
    if not isinstance(override, bool):
        raise reader.fail("override_path", "must be a boolean")
    scheme = host = path = ""
    if server:
        url = server if server.startswith(("http://", "https://")) else "https://" + server
        parts = urlsplit(url)
        if not parts.netloc:
            raise reader.fail("server", f"unable to parse server {server!r}")
        scheme, host = parts.scheme, parts.netloc
        path = parts.path.rstrip("/")
        if path:
            path = "/" + "/".join(p for p in path.split("/") if p)
            if not path.endswith("/v2") and not override:
                path += "/v2"
        elif not override:
            path = "/v2"
    caps = Capability(0)
    raw_caps = table.get("capabilities")
    if raw_caps is None:
        caps = Capability.ALL
    else:
        if not isinstance(raw_caps, list) or not all(isinstance(c, str) for c in raw_caps):
            raise reader.fail("capabilities", "must be a list of strings")
        for c in raw_caps:
            try:
                caps |= Capability[str(c).upper()]
            except KeyError:
                raise reader.fail("capabilities", f"unknown capability {c!r}") from None
    skip = table.get("skip_verify")
    if skip is not None and not isinstance(skip, bool):
        raise reader.fail("skip_verify", "must be a boolean")
    cas = tuple(_abs(str(c), base_dir) for c in reader.string_list("ca"))
    pairs: list[tuple[str, str]] = []
    for item in reader.string_list("client", allow_pairs=True):
        if isinstance(item, str):
            pairs.append((_abs(item, base_dir), ""))
        else:
            pairs.append((_abs(item[0], base_dir), _abs(item[1], base_dir)))
    headers: list[tuple[str, str]] = []
    raw_headers = table.get("header", {})
    if not isinstance(raw_headers, dict):
        raise reader.fail("header", "must be a table")
    for name, value in raw_headers.items():
        if isinstance(value, str):
            headers.append((name, value))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            headers += [(name, str(v)) for v in value]
        else:
            raise reader.fail(f"header.{name}", "must be a string or a list of strings")
    dial = table.get("dial_timeout")
    if dial is not None and not isinstance(dial, str):
        raise reader.fail("dial_timeout", "must be a duration string")
    tls = TLSOptions(ca_files=cas, client_pairs=tuple(pairs), skip_verify=skip)
    return scheme, host, path, caps, tuple(headers), tls


@dataclass(frozen=True, slots=True)
class _Entry:
    scheme: str
    host: str
    path: str
    capabilities: Capability
    headers: tuple[tuple[str, str], ...]
    tls: TLSOptions


def parse_hosts_file(file: Path, data: str | None = None) -> list[_Entry]:
    """Parse one ``hosts.toml``: the ``[host]`` entries in file order, then the server entry.

    The server entry has an empty ``host`` when the file sets no ``server``.

    Raises:
        InvalidArgumentError: bad TOML, an unknown key or a value of the wrong type.
    """
    import tomllib  # only here: a pull without a hosts.toml does not pay its import

    text = file.read_text() if data is None else data
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{file}: failed to parse TOML: {exc}"
        raise InvalidArgumentError(msg) from None
    top = _Reader(file, doc, "")
    top.check_keys(_TOP_KEYS)
    base_dir = file.parent
    entries: list[_Entry] = []
    hosts = doc.get("host", {})
    if not isinstance(hosts, dict):
        raise top.fail("host", 'must be a table of [host."<url>"] tables')
    for url, table in hosts.items():
        where = f'host."{url}".'
        if not isinstance(table, dict):
            raise InvalidArgumentError(f"{file}: {where[:-1]}: must be a table")
        reader = _Reader(file, table, where)
        reader.check_keys(_HOST_KEYS)
        entries.append(_Entry(*_parse_entry(reader, url, base_dir)))
    server = doc.get("server", "")
    if not isinstance(server, str):
        raise top.fail("server", "must be a string")
    entries.append(_Entry(*_parse_entry(top, server, base_dir)))
    return entries


def _cert_files(directory: Path) -> TLSOptions:
    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    for f in sorted(directory.iterdir()):
        if f.suffix == ".crt":
            cas.append(str(f))
        elif f.suffix == ".cert":
            key = f.with_suffix(".key")
            if not key.exists():
                msg = f"missing key {key.name} for client certificate {f}"
                raise InvalidArgumentError(msg)
            pairs.append((str(f), str(key)))
    return TLSOptions(ca_files=tuple(cas), client_pairs=tuple(pairs))


@dataclass(frozen=True, slots=True, kw_only=True)
class HostsConfig:
    """Builds the server list for a registry host (containerd's ``ConfigureHosts``).

    Attributes:
        hosts_dir: root of the per-host directories (``--hosts-dir``), or ``None``.
        default_scheme: ``http`` with ``--plain-http``, else ``https``.
        default_tls: TLS settings from the command line (``--tlscacert``,
            ``--skip-verify``...), used for servers that set none.
        headers: headers sent to every server.
    """

    hosts_dir: Path | None = None
    default_scheme: str = "https"
    default_tls: TLSOptions = field(default_factory=TLSOptions)
    headers: Sequence[tuple[str, str]] = ()

    def hosts(self, registry: str) -> list[RegistryHost]:
        """The servers for ``registry``, in the order they are tried.

        Raises:
            InvalidArgumentError: the host's ``hosts.toml`` is invalid.
        """
        entries: list[_Entry] | None = None
        directory = find_host_dir(self.hosts_dir, registry) if self.hosts_dir else None
        if directory is not None:
            file = directory / HOSTS_FILE
            if file.is_file() and file.stat().st_size > 0:
                entries = parse_hosts_file(file)
            else:
                entries = [_Entry("", "", "", Capability.ALL, (), _cert_files(directory))]
        if entries is None:
            entries = [_Entry("", "", "", Capability.ALL, (), TLSOptions())]
        out: list[RegistryHost] = []
        for entry in entries:
            scheme, host, path, caps = entry.scheme, entry.host, entry.path, entry.capabilities
            tls = entry.tls if entry.tls.is_set else self.default_tls
            fallback = False
            if not host:  # the upstream registry itself
                path = "/v2"
                if registry == DOCKER_HUB:
                    scheme, host = "https", DOCKER_HUB_SERVER
                else:
                    scheme, host = self.default_scheme, registry
                    # a registry on this machine may well speak plain HTTP only
                    fallback = scheme == "https" and is_localhost(registry)
            elif scheme == "http" and entry.tls.is_set:
                # upstream: an http:// server with TLS settings is tried over HTTPS first
                scheme, fallback = "https", True
            out.append(
                RegistryHost(
                    scheme=scheme,
                    host=host,
                    path=path,
                    capabilities=caps,
                    headers=(*self.headers, *entry.headers),
                    tls=tls,
                    http_fallback=fallback,
                )
            )
        if log.isEnabledFor(logging.DEBUG):
            where = f" from {directory}" if directory else ""
            log.debug(
                "registry hosts for %s%s: %s", registry, where, "; ".join(str(h) for h in out)
            )
        return out


def with_capability(hosts: Sequence[RegistryHost], cap: Capability) -> list[RegistryHost]:
    """The hosts that have ``cap``."""
    return [h for h in hosts if cap in h.capabilities]
