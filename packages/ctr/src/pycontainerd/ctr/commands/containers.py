"""``ctr containers``: container records (list, info, label, remove)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.ctr.common import go_json, group, join_labels, log, object_with_labels, run
from pycontainerd.ctr.tabwriter import TabWriter
from pycontainerd.ctr.units import rfc3339nano

if TYPE_CHECKING:
    from pycontainerd.client.client import Client
    from pycontainerd.core.containers import Container

containers = group("containers", "Manage containers")


@containers.command_with_aliases("list", "ls")
@click.option("--quiet", "-q", is_flag=True, help="Print only the container id")
@click.argument("filters", nargs=-1)
@click.pass_context
def list_containers(ctx: click.Context, quiet: bool, filters: tuple[str, ...]) -> None:
    """List containers."""

    async def work(client: Client) -> list[Container]:
        return await client.container_store().list(*filters)

    found = run(ctx, work)
    if quiet:
        for c in found:
            click.echo(c.id)
        return
    w = TabWriter(sys.stdout, 4, 8, 4, " ")
    w.write("CONTAINER\tIMAGE\tRUNTIME\t\n")
    for c in found:
        w.write(f"{c.id}\t{c.image or '-'}\t{c.runtime.name}\t\n")
    w.flush()


def container_json(c: Container) -> dict[str, Any]:
    """The record the way ``ctr containers info`` prints it."""
    doc: dict[str, Any] = {"ID": c.id, "Labels": dict(sorted(c.labels.items())) or None}
    doc["Image"] = c.image
    doc["Runtime"] = {"Name": c.runtime.name, "Options": None}
    spec: Any = None
    if c.spec is not None:
        try:
            spec = json.loads(c.spec.value)
        except ValueError:
            spec = {"type_url": c.spec.type_url}
    doc["SnapshotKey"] = c.snapshot_key
    doc["Snapshotter"] = c.snapshotter
    doc["CreatedAt"] = rfc3339nano(c.created_at)
    doc["UpdatedAt"] = rfc3339nano(c.updated_at)
    doc["Extensions"] = {k: {"type_url": v.type_url} for k, v in c.extensions.items()} or None
    doc["SandboxID"] = c.sandbox_id
    doc["Spec"] = spec
    return doc


@containers.command("info")
@click.option("--spec", is_flag=True, help="Only display the spec")
@click.argument("container_id")
@click.pass_context
def info(ctx: click.Context, spec: bool, container_id: str) -> None:
    """Get info about a container."""

    async def work(client: Client) -> Container:
        return await client.container_store().get(container_id)

    doc = container_json(run(ctx, work))
    click.echo(go_json(doc["Spec"] if spec else doc))


@containers.command("label")
@click.argument("args", nargs=-1)
@click.pass_context
def label(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Set and clear labels for a container: <id> [<key>=<value>, ...]."""
    from dataclasses import replace

    cid, labels = object_with_labels(args)
    if not cid:
        msg = "please specify a container"
        raise InvalidArgumentError(msg)

    async def work(client: Client) -> Container:
        store = client.container_store()
        current = await store.get(cid)
        record = replace(current, labels={k: v for k, v in labels.items() if v})
        return await store.update(record, *(f"labels.{k}" for k in labels))

    click.echo(join_labels(run(ctx, work).labels))


@containers.command_with_aliases("delete", "del", "remove", "rm")
@click.option("--keep-snapshot", is_flag=True, help="Do not clean up snapshot with container")
@click.argument("ids", nargs=-1)
@click.pass_context
def delete(ctx: click.Context, keep_snapshot: bool, ids: tuple[str, ...]) -> None:
    """Delete one or more existing containers."""
    if not ids:
        msg = "must specify at least one container to delete"
        raise InvalidArgumentError(msg)

    async def work(client: Client) -> Exception | None:
        first: Exception | None = None
        store = client.container_store()
        for cid in ids:
            try:
                c = await store.get(cid)
                await store.delete(cid)
                if not keep_snapshot and c.snapshot_key:
                    await client.snapshot_service(c.snapshotter or None).remove(c.snapshot_key)
            except Exception as exc:
                log("error", "failed to delete container", error=exc)
                first = first or exc
        return first

    err = run(ctx, work)
    if err is not None:
        raise err
