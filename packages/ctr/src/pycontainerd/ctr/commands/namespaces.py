"""``ctr namespaces``: create, list, label and remove namespaces."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import click

from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.ctr.common import (
    group,
    join_labels,
    labels_command,
    list_command,
    print_list,
    run,
    run_each,
    unable_to_delete,
)

if TYPE_CHECKING:
    from pycontainerd.client.client import Client

namespaces = group("namespaces", "Manage namespaces")


@labels_command(namespaces, "create", "c", missing="please specify a namespace")
def create(ctx: click.Context, name: str, labels: dict[str, str]) -> None:
    """Create a new namespace. It must be unique. Usage: <name> [<key>=<value>...]."""

    async def work(client: Client) -> None:
        await client.namespace_store().create(name, labels)

    run(ctx, work)


@labels_command(namespaces, "label", missing="please specify a namespace")
def label(ctx: click.Context, name: str, labels: dict[str, str]) -> None:
    """Set and clear labels for a namespace. An empty value clears the label."""

    async def work(client: Client) -> None:
        store = client.namespace_store()
        for k, v in labels.items():
            await store.set_label(name, k, v)

    run(ctx, work)


@list_command(namespaces, "Print only the namespace name", filters=False)
def list_namespaces(ctx: click.Context, quiet: bool) -> None:
    """List namespaces."""
    print_list(
        run(ctx, lambda client: client.namespace_store().list_with_labels()),
        quiet,
        lambda found: found[0],
        "NAME\tLABELS\t\n",
        lambda found: f"{found[0]}\t{join_labels(found[1])}\t\n",
    )


@namespaces.command_with_aliases("remove", "rm")
@click.option("--cgroup", "-c", is_flag=True, help="Delete the namespace's cgroup")
@click.argument("names", nargs=-1)
@click.pass_context
def remove(ctx: click.Context, cgroup: bool, names: tuple[str, ...]) -> None:
    """Remove one or more namespaces. For now, the namespace must be empty."""

    async def remove_one(client: Client, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            await client.namespace_store().delete(name)
        if cgroup:
            _remove_cgroup(name)
        click.echo(name)

    run_each(ctx, names, remove_one, unable_to_delete)


def _remove_cgroup(name: str) -> None:
    """Remove the namespace's top-level cgroup (v2: ``/sys/fs/cgroup/<name>``) if empty."""
    import os

    with contextlib.suppress(OSError):
        os.rmdir(os.path.join("/sys/fs/cgroup", name))
