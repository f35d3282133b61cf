"""``ctr plugins``: what the daemon loaded (``Introspection.Plugins``)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from pycontainerd.ctr.common import group, run
from pycontainerd.ctr.tabwriter import TabWriter

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pycontainerd.client.client import Client
    from pycontainerd.client.proxies.introspection import PluginInfo
    from pycontainerd.core.platforms import Platform

#: Go's ``codes.Code`` names, by number.
CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip

plugins = group("plugins", "Provides information about containerd plugins")


def pretty_platforms(platforms: Iterable[Platform]) -> str:
    """Unique ``os/arch[/variant]`` strings, sorted, joined by ``,``."""
    from pycontainerd.core.platforms import format_platform

    return ",".join(sorted({format_platform(p) for p in platforms}))


def code_name(code: int) -> str:
    """Go's name for a gRPC status code number."""
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else f"Code({code})"


def status_of(plugin: PluginInfo) -> str:
    """``ok``, ``skip`` (the init error mentions ``skip plugin``) or ``error``."""
    if plugin.init_err is None:
        return "ok"
    return "skip" if "skip plugin" in plugin.init_err.message else "error"


@plugins.command_with_aliases("list", "ls")
@click.option("--quiet", "-q", is_flag=True, help="Print only the plugin ids")
@click.option("--detailed", "-d", is_flag=True, help="Print detailed information about each plugin")
@click.argument("filters", nargs=-1)
@click.pass_context
def list_plugins(  # noqa: PLR0912 - one branch per detailed field, as upstream
    ctx: click.Context, quiet: bool, detailed: bool, filters: tuple[str, ...]
) -> None:
    """Lists containerd plugins."""

    async def work(client: Client) -> list[PluginInfo]:
        return await client.introspection().plugins(*filters)

    found = run(ctx, work)
    if quiet:
        for p in found:
            click.echo(p.id)
        return
    w = TabWriter(sys.stdout, 4, 8, 4, " ")
    if detailed:
        for i, p in enumerate(found):
            if i:
                w.println("\t\t\t")
            w.println("Type:\t", p.type)
            w.println("ID:\t", p.id)
            if p.requires:
                w.println("Requires:\t")
                for r in p.requires:
                    w.println("\t", r)
            if p.platforms:
                w.println("Platforms:\t", pretty_platforms(p.platforms))
            if p.exports:
                w.println("Exports:\t")
                for k, v in sorted(p.exports.items()):
                    w.println("\t", k, "\t", v)
            if p.capabilities:
                w.println("Capabilities:\t", ",".join(p.capabilities))
            if p.init_err is not None:
                w.println("Error:\t")
                w.println("\t Code:\t", code_name(p.init_err.code))
                w.println("\t Message:\t", p.init_err.message)
        w.flush()
        return
    w.write("TYPE\tID\tPLATFORMS\tSTATUS\t\n")
    for p in found:
        platforms = pretty_platforms(p.platforms) or "-"
        w.write(f"{p.type}\t{p.id}\t{platforms}\t{status_of(p)}\t\n")
    w.flush()
