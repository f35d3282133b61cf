"""Where a client dials: a unix socket, or TCP with TLS (the daemon's ``[grpc] tcp_address``).

Accepted forms, from the ``address`` argument or ``CONTAINERD_ADDRESS``:

* a socket path (``/run/pycontainerd/containerd.sock``) or ``unix://<path>``;
* ``tcp://<host>:<port>`` (``[::1]:<port>`` for IPv6), the daemon's TCP
  listener. With :class:`TLSConfig` (``ca``, and ``cert``/``key`` when the
  daemon checks client certificates, as it does with ``tcp_tls_ca``) the
  connection is TLS; without, it is plaintext (a daemon configured without
  ``tcp_tls_cert``).

TLS settings come from the arguments or the environment:
``CONTAINERD_TLS_CA``, ``CONTAINERD_TLS_CERT``, ``CONTAINERD_TLS_KEY`` (our
``ctr`` takes ``--tls-ca``, ``--tls-cert``, ``--tls-key``; upstream's
``ctr`` has no TCP support). A certificate the CA does not vouch for is
reported as such (:func:`diagnose_tls`), not as a bare dial timeout.

Importing this module does not import grpc.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pycontainerd.config import client as client_config
from pycontainerd.config.errors import ConfigError
from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Mapping

TLS_CA_ENV: Final = "CONTAINERD_TLS_CA"
TLS_CERT_ENV: Final = "CONTAINERD_TLS_CERT"
TLS_KEY_ENV: Final = "CONTAINERD_TLS_KEY"
TCP_SCHEME: Final = "tcp://"


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSConfig:
    """TLS for a ``tcp://`` address: PEM file paths.

    Attributes:
        ca: the CA that signed the daemon's certificate ("" for the system's roots).
        cert: the client certificate (with ``key``), for a daemon with ``tcp_tls_ca``.
        key: the client certificate's private key.
        server_name: the name to check the daemon's certificate against
            (default: the address's host).
    """

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            msg = "a TLS client certificate needs both cert and key"
            raise InvalidArgumentError(msg)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TLSConfig | None:
        """``CONTAINERD_TLS_CA``/``_CERT``/``_KEY``; ``None`` when none is set."""
        environ = os.environ if env is None else env
        ca, cert, key = (environ.get(k, "") for k in (TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV))
        if not (ca or cert or key):
            return None
        return cls(ca=ca, cert=cert, key=key)

    def read(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        """The CA, key and certificate as bytes (``None`` for those not set).

        Raises:
            InvalidArgumentError: a file cannot be read.
        """

        def load(path: str, what: str) -> bytes | None:
            if not path:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                msg = f"read TLS {what} {path}: {exc.strerror or exc}"
                raise InvalidArgumentError(msg) from None

        return load(self.ca, "CA"), load(self.key, "key"), load(self.cert, "certificate")


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A parsed address: a unix socket ``path``, or TCP ``host`` and ``port``."""

    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def is_tcp(self) -> bool:
        """Whether this is a ``tcp://`` address."""
        return bool(self.host)

    def __str__(self) -> str:
        """The socket path, or ``tcp://host:port`` (what error messages show)."""
        if not self.is_tcp:
            return self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{TCP_SCHEME}{host}:{self.port}"

    def grpc_target(self) -> str:
        """The target string for a grpc channel."""
        if not self.is_tcp:
            return client_config.grpc_target(self.path)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_tcp(address: str) -> Address:
    """``tcp://host:port`` -> :class:`Address`.

    Raises:
        InvalidArgumentError: no host, or a port that is not 1-65535.
    """
    rest = address[len(TCP_SCHEME) :].rstrip("/")
    if rest.startswith("["):
        host, sep, port_text = rest[1:].partition("]:")
    else:
        host, sep, port_text = rest.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        msg = f'invalid address "{address}": expected tcp://<host>:<port>'
        raise InvalidArgumentError(msg)
    return Address(host=host, port=int(port_text))


def resolve(address: str | None = None, env: Mapping[str, str] | None = None) -> Address:
    """The address to dial: ``address``, else ``CONTAINERD_ADDRESS``, else the default socket.

    Raises:
        InvalidArgumentError: an empty address, a malformed ``tcp://`` one, or
            another scheme (config's text).
    """
    environ = os.environ if env is None else env
    raw = address if address is not None else environ.get(client_config.ADDRESS_ENV, "") or None
    if raw is not None and raw.startswith(TCP_SCHEME):
        return parse_tcp(raw)
    try:
        return Address(path=client_config.resolve_address(raw, environ))
    except ConfigError as exc:
        raise InvalidArgumentError(exc.message) from exc


def diagnose_tls(  # noqa: PLR0911 - one answer per way a handshake fails
    address: Address, tls: TLSConfig, timeout: float = 5.0
) -> str:
    """Why a TLS connection to ``address`` fails, in words ("" if a handshake succeeds).

    gRPC reports a refused certificate only as an unreachable server; this
    repeats the handshake with Python's ``ssl`` to name the reason.
    """
    import socket
    import ssl

    ctx = ssl.create_default_context(cafile=tls.ca or None)
    ctx.set_alpn_protocols(["h2"])
    if tls.cert:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except (OSError, ssl.SSLError) as exc:
            return f"cannot load the client certificate {tls.cert}: {exc}"
    name = tls.server_name or address.host
    try:
        with (
            socket.create_connection((address.host, address.port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=name) as conn,
        ):
            conn.settimeout(min(timeout, 1.0))
            try:  # TLS 1.3: a refused client certificate shows only after the handshake
                closed = conn.recv(1) == b""
            except TimeoutError:
                closed = False
            if closed:
                return _refused(tls, "it closed the connection after the handshake")
    except ssl.SSLCertVerificationError as exc:
        where = f"the CA {tls.ca}" if tls.ca else "the system's CAs"
        return (
            f"tls: the daemon's certificate is not trusted by {where}: "
            f"{exc.verify_message or exc.reason} (check --tls-ca / {TLS_CA_ENV})"
        )
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if any(k in reason.upper() for k in ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERT")):
            return _refused(tls, reason)
        return f"tls handshake failed: {reason}"
    except OSError as exc:
        return f"connect {address}: {exc.strerror or exc}"
    return ""


def _refused(tls: TLSConfig, reason: str) -> str:
    what = (
        f"it did not accept the client certificate {tls.cert}"
        if tls.cert
        else "it wants a client certificate"
    )
    return (
        f"tls: the daemon refused this client ({reason}): {what} signed by its CA "
        f"(--tls-cert/--tls-key, {TLS_CERT_ENV}/{TLS_KEY_ENV})"
    )
