"""The registry flags every ``ctr`` command that talks to a registry shares.

Upstream's ``commands.RegistryFlags`` (``--skip-verify/-k``, ``--plain-http``,
``--user/-u``, ``--refresh``, ``--hosts-dir``, ``--tlscacert``,
``--tlscert``, ``--tlskey``, ``--http-dump``, ``--http-trace``) as one
decorator, and :func:`resolver` turning their values into a
:class:`~pycontainerd.remotes.resolver.Resolver`.

Importing this module must not import grpc or the HTTP client: the
resolver is built only when a command runs.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Callable

    from pycontainerd.remotes.resolver import Resolver

F = TypeVar("F", bound="Callable[..., Any]")

_OPTIONS = (
    click.option("--skip-verify", "-k", is_flag=True, help="skip SSL certificate validation"),
    click.option("--plain-http", is_flag=True, help="allow connections using plain HTTP"),
    click.option("--user", "-u", default="", help="user[:password] Registry user and password"),
    click.option("--refresh", default="", help="refresh token for authorization server"),
    click.option("--hosts-dir", default="", help="Custom hosts configuration directory"),
    click.option("--tlscacert", default="", help="path to TLS root CA"),
    click.option("--tlscert", default="", help="path to TLS client certificate"),
    click.option("--tlskey", default="", help="path to TLS client key"),
    click.option(
        "--http-dump",
        is_flag=True,
        help="dump all HTTP request/responses when interacting with container registry",
    ),
    click.option(
        "--http-trace", is_flag=True, help="enable HTTP tracing for registry interactions"
    ),
)

_NAMES = (
    "skip_verify",
    "plain_http",
    "user",
    "refresh",
    "hosts_dir",
    "tlscacert",
    "tlscert",
    "tlskey",
    "http_dump",
    "http_trace",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistryOptions:
    """The values of the registry flags."""

    skip_verify: bool = False
    plain_http: bool = False
    user: str = ""
    refresh: str = ""
    hosts_dir: str = ""
    tlscacert: str = ""
    tlscert: str = ""
    tlskey: str = ""
    http_dump: bool = False
    http_trace: bool = False


def registry_flags(f: F) -> F:
    """Add the registry flags to a command; it receives them as ``registry: RegistryOptions``."""
    import functools

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _NAMES}
        kwargs["registry"] = RegistryOptions(**values)
        return f(*args, **kwargs)

    out: Any = wrapper
    for option in reversed(_OPTIONS):
        out = option(out)
    return out  # type: ignore[no-any-return]


def credentials(user: str) -> tuple[str, str] | None:
    """``--user`` as ``(username, secret)``; the password is asked for when missing.

    Raises:
        InvalidArgumentError: no password given and no terminal to ask on.
    """
    if not user:
        return None
    name, sep, secret = user.partition(":")
    if not sep:
        if not sys.stdin.isatty():
            msg = f"no password given for user {name!r} and stdin is not a terminal"
            raise InvalidArgumentError(msg)
        secret = click.prompt("Password", hide_input=True, err=True, default="", show_default=False)
    return name, secret


def resolver(opts: RegistryOptions, *, max_concurrent: int = 0) -> Resolver:
    """A resolver configured from the registry flags (upstream's ``GetResolver``).

    Raises:
        InvalidArgumentError: ``--tlskey`` without ``--tlscert`` or the other way
            round, or a missing ``--hosts-dir``.
    """
    from pycontainerd.remotes.hosts import HostsConfig, TLSOptions
    from pycontainerd.remotes.resolver import Resolver

    if bool(opts.tlscert) != bool(opts.tlskey):
        msg = "both --tlscert and --tlskey must be given for a client certificate"
        raise InvalidArgumentError(msg)
    hosts_dir = Path(opts.hosts_dir) if opts.hosts_dir else None
    if hosts_dir is not None and not hosts_dir.is_dir():
        msg = f"hosts directory {opts.hosts_dir}: no such directory"
        raise InvalidArgumentError(msg)
    tls = TLSOptions(
        ca_files=(opts.tlscacert,) if opts.tlscacert else (),
        client_pairs=((opts.tlscert, opts.tlskey),) if opts.tlscert else (),
        skip_verify=True if opts.skip_verify else None,
    )
    creds = credentials(opts.user)
    if opts.http_dump or opts.http_trace:
        logging.basicConfig(stream=sys.stderr, level=logging.DEBUG)
        for name in ("httpx", "httpcore", "pycontainerd.remotes"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    config = HostsConfig(
        hosts_dir=hosts_dir,
        default_scheme="http" if opts.plain_http else "https",
        default_tls=tls,
    )
    kwargs: dict[str, Any] = {}
    if max_concurrent > 0:
        kwargs["max_concurrent"] = max_concurrent
    return Resolver(config, credentials=(lambda _host: creds) if creds else None, **kwargs)
