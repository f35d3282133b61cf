"""The ``containerd`` command line (console script and ``python -m pycontainerd.daemon``).

Kept light: ``containerd --help`` and ``--version`` import click and nothing
heavy; the server, grpc and the config model load only when they run.
"""

from __future__ import annotations

import sys
from typing import Any

import click


def _fail(message: object) -> None:
    """Print ``containerd: <message>`` on stderr and exit 1, like upstream."""
    click.echo(f"containerd: {message}", err=True)
    sys.exit(1)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from pycontainerd.daemon.version import PACKAGE, revision, server_version

    click.echo(f"containerd {PACKAGE} {server_version()} {revision()}")
    ctx.exit()


@click.group(
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--config", "-c", "config_path", metavar="PATH", help="Path to the configuration file."
)
@click.option("--log-level", "-l", metavar="LEVEL", help="Set the logging level [trace … panic].")
@click.option("--address", "-a", metavar="PATH", help="Address for containerd's gRPC server.")
@click.option("--root", metavar="DIR", help="containerd root directory.")
@click.option("--state", metavar="DIR", help="containerd state directory.")
@click.option(
    "--version",
    "-v",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Print the version.",
)
@click.pass_context
def cli(  # noqa: PLR0917 - click passes options positionally
    ctx: click.Context,
    config_path: str | None,
    log_level: str | None,
    address: str | None,
    root: str | None,
    state: str | None,
) -> None:
    """High performance container runtime (pycontainerd).

    Without a subcommand, runs the daemon.
    """
    ctx.obj = {
        "config_path": config_path,
        "log_level": log_level,
        "address": address,
        "root": root,
        "state": state,
    }
    if ctx.invoked_subcommand is not None:
        return
    from pycontainerd.daemon.settings import SettingsError, load_settings

    try:
        settings = load_settings(
            config_path, log_level=log_level, address=address, root=root, state=state
        )
    except SettingsError as exc:
        _fail(exc)
        return
    from pycontainerd.daemon.server import run

    sys.exit(run(settings))


@cli.group("config")
def config_group() -> None:
    """Information on the containerd config."""


@config_group.command("default")
def config_default() -> None:
    """See the output of the default config."""
    from pycontainerd.daemon.settings import render_default

    click.echo(render_default(), nl=False)


@config_group.command("dump")
@click.pass_context
def config_dump(ctx: click.Context) -> None:
    """See the output of the final main config with imported in subconfig files."""
    from pycontainerd.daemon.settings import SettingsError, render_dump

    obj: dict[str, Any] = ctx.find_root().obj or {}
    try:
        click.echo(render_dump(obj.get("config_path")), nl=False)
    except SettingsError as exc:
        _fail(exc)


@cli.command("publish")
@click.option("--topic", default="", help="Topic of the event.")
@click.option("--namespace", default="", help="Namespace to publish to.")
@click.pass_context
def publish(ctx: click.Context, topic: str, namespace: str) -> None:
    """Binary to publish events to containerd (reads a protobuf Any from stdin)."""
    from pycontainerd.daemon.publish import PublishError, publish_event

    obj: dict[str, Any] = ctx.find_root().obj or {}
    try:
        publish_event(obj.get("address") or "", namespace, topic, sys.stdin.buffer.read())
    except PublishError as exc:
        _fail(exc)


@cli.command(
    "oci-hook",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def oci_hook(args: tuple[str, ...]) -> None:
    """Provides a base for OCI runtime hooks to allow arguments to be injected."""
    from pycontainerd.daemon.ocihook import OciHookError, run_hook

    try:
        run_hook(list(args), sys.stdin.buffer.read())
    except (OciHookError, OSError) as exc:
        _fail(exc)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="containerd")
