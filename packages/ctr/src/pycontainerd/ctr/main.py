"""The ``ctr`` root command: global flags and lazily loaded subcommands.

Subcommand modules (``pycontainerd.ctr.commands.*``) import grpc and the API
stubs; this module does not, so ``ctr --help`` and ``ctr <cmd> --help`` for a
command that is never run stay light. The table below carries each command's
aliases and one-line help so listing commands imports nothing: ``ctr --help`` must
not pay for grpc (tests/test_import_weight.py holds it to that).

Errors end the program the way containerd's ``ctr`` does: ``ctr: <error>``
on stderr and exit status 1.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, NamedTuple

import click

from pycontainerd.ctr.common import AliasGroup, CtrContext

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


class Lazy(NamedTuple):
    """Where a subcommand lives, its aliases and the help shown by ``ctr --help``."""

    target: str
    short_help: str
    aliases: tuple[str, ...] = ()


#: Upstream's order (1.6/1.7 ``ctr --help``).
COMMANDS: dict[str, Lazy] = {
    "plugins": Lazy(
        "pycontainerd.ctr.commands.plugins:plugins",
        "Provides information about containerd plugins",
        ("plugin",),
    ),
    "version": Lazy(
        "pycontainerd.ctr.commands.version:version", "Print the client and server versions"
    ),
    "containers": Lazy(
        "pycontainerd.ctr.commands.containers:containers",
        "Manage containers",
        ("c", "container"),
    ),
    "content": Lazy("pycontainerd.ctr.commands.content:content", "Manage content"),
    "events": Lazy(
        "pycontainerd.ctr.commands.events:events", "Display containerd events", ("event",)
    ),
    "images": Lazy("pycontainerd.ctr.commands.images:images", "Manage images", ("image", "i")),
    "leases": Lazy("pycontainerd.ctr.commands.leases:leases", "Manage leases"),
    "namespaces": Lazy(
        "pycontainerd.ctr.commands.namespaces:namespaces",
        "Manage namespaces",
        ("namespace", "ns"),
    ),
    "run": Lazy("pycontainerd.ctr.commands.run:run_command", "Run a container"),
    "snapshots": Lazy(
        "pycontainerd.ctr.commands.snapshots:snapshots", "Manage snapshots", ("snapshot",)
    ),
    "tasks": Lazy("pycontainerd.ctr.commands.tasks:tasks", "Manage tasks", ("t", "task")),
    "install": Lazy("pycontainerd.ctr.commands.install:install_command", "Install a new package"),
    "sandboxes": Lazy(
        "pycontainerd.ctr.commands.sandboxes:sandboxes",
        "Manage sandboxes",
        ("sandbox", "sb", "s"),
    ),
}


class LazyGroup(AliasGroup):
    """Imports a subcommand's module only when that subcommand runs."""

    def __init__(self, *args: Any, lazy_subcommands: Mapping[str, Lazy], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy_subcommands)
        for name, lazy in self._lazy.items():
            for alias in lazy.aliases:
                self.aliases[alias] = name

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self._lazy, *(n for n in super().list_commands(ctx) if n not in self._lazy)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = self.aliases.get(cmd_name, cmd_name)
        lazy = self._lazy.get(name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = lazy.target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            msg = f"{lazy.target} is not a click command"
            raise TypeError(msg)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(", ".join((n, *lazy.aliases)), lazy.short_help) for n, lazy in self._lazy.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy_subcommands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(None, "--version", "-v", package_name="pycontainerd-ctr", prog_name="ctr")
@click.option("--debug", is_flag=True, help="Enable debug output in logs")
@click.option(
    "--address",
    "-a",
    envvar="CONTAINERD_ADDRESS",
    default=None,
    help="Address for containerd's GRPC server: a socket path, unix://PATH or "
    "tcp://HOST:PORT (env CONTAINERD_ADDRESS)",
)
@click.option(
    "--tls-ca",
    envvar="CONTAINERD_TLS_CA",
    default="",
    help="CA certificate for a tcp:// address with TLS (env CONTAINERD_TLS_CA)",
)
@click.option(
    "--tls-cert",
    envvar="CONTAINERD_TLS_CERT",
    default="",
    help="Client certificate for a tcp:// address with TLS (env CONTAINERD_TLS_CERT)",
)
@click.option(
    "--tls-key",
    envvar="CONTAINERD_TLS_KEY",
    default="",
    help="Client certificate key for a tcp:// address with TLS (env CONTAINERD_TLS_KEY)",
)
@click.option("--timeout", default="0s", help="Total timeout for ctr commands")
@click.option("--connect-timeout", default="0s", help="Timeout for connecting to containerd")
@click.option(
    "--namespace",
    "-n",
    envvar="CONTAINERD_NAMESPACE",
    default="default",
    show_default=True,
    help="Namespace to use with commands (env CONTAINERD_NAMESPACE)",
)
@click.pass_context
def cli(  # noqa: PLR0917 - click passes options as arguments
    ctx: click.Context,
    debug: bool,
    address: str | None,
    tls_ca: str,
    tls_cert: str,
    tls_key: str,
    timeout: str,
    connect_timeout: str,
    namespace: str,
) -> None:
    """Ctr is an unsupported debug and administrative client for interacting
    with the containerd daemon (pycontainerd's implementation).
    """  # noqa: D205 - click shows this text as is
    ctx.obj = CtrContext(
        address=address,
        namespace=namespace,
        timeout=timeout,
        connect_timeout=connect_timeout,
        debug=debug,
        tls_ca=tls_ca,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``ctr`` console script."""
    from pycontainerd.ctr.common import CommandError

    try:
        cli.main(
            args=list(argv) if argv is not None else None, prog_name="ctr", standalone_mode=False
        )
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        sys.stderr.write("Aborted!\n")
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except CommandError as exc:
        sys.exit(exc.code)
    except Exception as exc:
        sys.stderr.write(f"ctr: {exc}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
