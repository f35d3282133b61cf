"""``ctr snapshots``: snapshots of one snapshotter (``--snapshotter``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from pycontainerd.ctr.common import (
    AliasGroup,
    go_json,
    join_labels,
    labels_command,
    print_table,
    run,
)
from pycontainerd.ctr.units import bytes_size, rfc3339, rfc3339nano

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pycontainerd.client.client import Client
    from pycontainerd.core.snapshots import Info, Usage
    from pycontainerd.core.types import Mount

GC_ROOT = "containerd.io/gc.root"


@click.group("snapshots", cls=AliasGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="",
    help="Snapshotter name. Empty value stands for the default value.",
)
@click.pass_context
def snapshots(ctx: click.Context, snapshotter: str) -> None:
    """Manage snapshots."""
    ctx.meta["snapshotter"] = snapshotter or None


def _sn(ctx: click.Context, client: Client) -> Any:
    return client.snapshot_service(ctx.meta.get("snapshotter"))


def _root_label() -> dict[str, str]:
    return {GC_ROOT: rfc3339(datetime.now(UTC).replace(microsecond=0))}


def print_mounts(target: str, mounts: Sequence[Mount]) -> None:
    """``mount -t <type> <source> <target> -o <options>`` lines."""
    for m in mounts:
        where = os.path.normpath(os.path.join(target, m.target)) if m.target else target
        click.echo(f"mount -t {m.type} {m.source} {where} -o {','.join(m.options)}")


def mounts_json(mounts: Sequence[Mount]) -> str:
    """Mounts as ``ctr`` prints them with ``--mounts``."""
    out = []
    for m in mounts:
        item: dict[str, Any] = {"Type": m.type, "Source": m.source}
        if m.target:
            item["Target"] = m.target
        item["Options"] = list(m.options) or None
        out.append(item)
    return go_json(out)


@snapshots.command_with_aliases("list", "ls")
@click.pass_context
def list_snapshots(ctx: click.Context) -> None:
    """List snapshots."""

    async def work(client: Client) -> list[Info]:
        return [i async for i in _sn(ctx, client).walk()]

    rows = (f"{info.name}\t{info.parent}\t{info.kind}\t\n" for info in run(ctx, work))
    print_table("KEY\tPARENT\tKIND\t\n", rows)


def _create(
    ctx: click.Context, view: bool, target: str, mounts: bool, args: tuple[str, ...]
) -> None:
    if not 1 <= len(args) <= 2:
        click.echo(ctx.get_help())
        return
    key, parent = args[0], (args[1] if len(args) > 1 else "")

    async def work(client: Client) -> list[Mount]:
        sn = _sn(ctx, client)
        if view:
            result: list[Mount] = await sn.view(key, parent)
        else:
            result = await sn.prepare(key, parent, labels=_root_label())
        return result

    found = run(ctx, work)
    if target:
        print_mounts(target, found)
    if mounts:
        click.echo(mounts_json(found))


def _create_command(name: str, view: bool, help_text: str) -> None:
    """Add ``snapshots <name>``: an active snapshot, or with ``view`` a read-only one."""

    @snapshots.command(name, help=help_text)
    @click.option(
        "--target", "-t", default="", help="Mount target path, will print mount, if provided"
    )
    @click.option("--mounts", is_flag=True, help="Print out snapshot mounts as JSON")
    @click.argument("args", nargs=-1)
    @click.pass_context
    def create(ctx: click.Context, target: str, mounts: bool, args: tuple[str, ...]) -> None:
        _create(ctx, view, target, mounts, args)


_create_command("prepare", False, "Prepare a snapshot from a committed snapshot: <key> [<parent>].")
_create_command(
    "view", True, "Create a read-only snapshot from a committed snapshot: <key> [<parent>]."
)


@snapshots.command_with_aliases("mounts", "m", "mount")
@click.argument("target")
@click.argument("key")
@click.pass_context
def mounts_cmd(ctx: click.Context, target: str, key: str) -> None:
    """Mount gets mount commands for the snapshots: <target> <key>."""

    async def work(client: Client) -> list[Mount]:
        result: list[Mount] = await _sn(ctx, client).mounts(key)
        return result

    print_mounts(target, run(ctx, work))


@snapshots.command("commit")
@click.argument("name")
@click.argument("key")
@click.pass_context
def commit(ctx: click.Context, name: str, key: str) -> None:
    """Commit an active snapshot into the provided name: <key> <active>."""

    async def work(client: Client) -> None:
        await _sn(ctx, client).commit(name, key, labels=_root_label())

    run(ctx, work)


@snapshots.command("info")
@click.argument("key")
@click.pass_context
def info(ctx: click.Context, key: str) -> None:
    """Get info about a snapshot."""

    async def work(client: Client) -> Info:
        result: Info = await _sn(ctx, client).stat(key)
        return result

    i = run(ctx, work)
    doc: dict[str, Any] = {"Kind": str(i.kind), "Name": i.name}
    if i.parent:
        doc["Parent"] = i.parent
    if i.labels:
        doc["Labels"] = dict(sorted(i.labels.items()))
    doc["Created"] = rfc3339nano(i.created_at)
    doc["Updated"] = rfc3339nano(i.updated_at)
    click.echo(go_json(doc))


@labels_command(snapshots, "label")
def label(ctx: click.Context, key: str, labels: dict[str, str]) -> None:
    """Add labels to a snapshot: <name> [<label>=<value> ...]."""
    from pycontainerd.core.snapshots import Info, Kind

    async def work(client: Client) -> Info:
        sn = _sn(ctx, client)
        if not labels:
            result: Info = await sn.stat(key)
            return result
        record = Info(kind=Kind.UNKNOWN, name=key, labels={k: v for k, v in labels.items() if v})
        result = await sn.update(record, *(f"labels.{k}" for k in labels))
        return result

    click.echo(join_labels(run(ctx, work).labels))


@snapshots.command("usage")
@click.option("-b", "in_bytes", is_flag=True, help="Display size in bytes")
@click.argument("keys", nargs=-1)
@click.pass_context
def usage(ctx: click.Context, in_bytes: bool, keys: tuple[str, ...]) -> None:
    """Usage of snapshots: [<key>, ...]."""

    async def work(client: Client) -> list[tuple[str, Usage]]:
        sn = _sn(ctx, client)
        names = list(keys) or [i.name async for i in sn.walk()]
        return [(n, await sn.usage(n)) for n in names]

    def row(found: tuple[str, Usage]) -> str:
        name, u = found
        size = str(u.size) if in_bytes else bytes_size(u.size)
        return f"{name}\t{size}\t{u.inodes}\t\n"

    print_table("KEY\tSIZE\tINODES\t\n", map(row, run(ctx, work)))


@snapshots.command_with_aliases("delete", "del", "remove", "rm")
@click.argument("keys", nargs=-1)
@click.pass_context
def delete(ctx: click.Context, keys: tuple[str, ...]) -> None:
    """Remove snapshots."""

    async def work(client: Client) -> None:
        sn = _sn(ctx, client)
        for key in keys:
            try:
                await sn.remove(key)
            except Exception as exc:
                raise type(exc)(f'failed to remove "{key}": {exc}') from exc

    run(ctx, work)


@snapshots.command("tree")
@click.pass_context
def tree(ctx: click.Context) -> None:
    """Display tree view of snapshot branches."""

    async def work(client: Client) -> list[Info]:
        return [i async for i in _sn(ctx, client).walk()]

    order: list[str] = []
    parents: dict[str, str] = {}
    kids: dict[str, list[str]] = {}

    def add(name: str, parent: str) -> None:
        if name not in parents:
            order.append(name)
        parents[name] = parent
        if parent:
            if parent not in parents:
                add(parent, "")
            kids.setdefault(parent, []).append(name)

    for i in run(ctx, work):
        add(i.name, i.parent)

    def show(name: str, level: int) -> None:
        prefix = "  " * level + ("\\_" if level else "")
        click.echo(f"{prefix} {name}")
        for child in kids.get(name, []):
            show(child, level + 1)

    for name in order:
        if not parents[name]:
            show(name, 0)


# -- diff and unpack live in snapshots_io.py ----------------------------------------------
from pycontainerd.ctr.commands import snapshots_io as _snapshots_io  # noqa: E402

_snapshots_io.register(snapshots)
# -- end diff and unpack ------------------------------------------------------------------
