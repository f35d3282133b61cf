"""``ctr version``: the client's and the daemon's versions."""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING

import click

from pycontainerd.ctr.common import run

if TYPE_CHECKING:
    from pycontainerd.client.client import Client, Version
    from pycontainerd.client.proxies.introspection import ServerInfo


def client_version() -> tuple[str, str]:
    """This ``ctr``'s version and revision (``PYCONTAINERD_REVISION`` when set)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        version = dist_version("pycontainerd-ctr")
    except PackageNotFoundError:  # pragma: no cover - bare source tree
        version = "0.0.0+unknown"
    return version, os.environ.get("PYCONTAINERD_REVISION", "")


@click.command("version")
@click.pass_context
def version(ctx: click.Context) -> None:
    """Print the client and server versions."""
    ours, revision = client_version()
    click.echo("Client:")
    click.echo(f"  Version:  {ours}")
    click.echo(f"  Revision: {revision}")
    click.echo(f"  Python version: {platform.python_version()}")
    click.echo("")
    sys.stdout.flush()

    async def work(client: Client) -> tuple[Version, ServerInfo]:
        return await client.version(), await client.server()

    v, server = run(ctx, work)
    click.echo("Server:")
    click.echo(f"  Version:  {v.version}")
    click.echo(f"  Revision: {v.revision}")
    click.echo(f"  UUID: {server.uuid}")
    if v.version != ours:
        click.echo("WARNING: version mismatch", err=True)
    if v.revision != revision:
        click.echo("WARNING: revision mismatch", err=True)
