"""``ctr install``: put an image's ``bin/`` (and ``lib/``) files into the managed opt directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pycontainerd.ctr.common import required, run

if TYPE_CHECKING:
    from pycontainerd.client.client import Client


@click.command(
    "install",
    help="install a new package",
    short_help="Install a new package",
)
@click.option("--libs", "-l", is_flag=True, help="install libs from the image")
@click.option(
    "--replace", "-r", is_flag=True, help="replace any binaries or libs in the opt directory"
)
@click.option(
    "--path",
    default="",
    help="set an optional install path other than the managed opt directory",
)
@click.argument("ref", required=False, default="")
@click.pass_context
def install_command(ctx: click.Context, libs: bool, replace: bool, path: str, ref: str) -> None:
    """Install a new package: <ref>."""
    from pycontainerd.client.install import install

    required(ref, "please provide an image reference to install")

    async def work(client: Client) -> list[str]:
        return await install(client, ref, path=path or None, libs=libs, replace=replace)

    run(ctx, work)
