"""``ctr snapshots diff`` and ``ctr snapshots unpack``: layers out of and into snapshots.

Attached to the ``snapshots`` group by :func:`register` (called at the end
of :mod:`pycontainerd.ctr.commands.snapshots`); the group's
``--snapshotter`` applies. Importing this module must not import grpc.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.ctr.common import label_args, required, run
from pycontainerd.ctr.units import rfc3339

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pycontainerd.client.client import Client
    from pycontainerd.core.types import Descriptor, Mount
    from pycontainerd.ctr.common import AliasGroup

GC_ROOT = "containerd.io/gc.root"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _unique() -> str:
    return os.urandom(6).hex()


async def _with_mounts(
    sn: Any, key: str, f: Callable[[list[Mount]], Awaitable[Descriptor]], view_key: str
) -> Descriptor:
    """``f`` over the mounts of ``key``: its own when active, a temporary view otherwise."""
    from pycontainerd.core.snapshots import Kind

    info = await sn.stat(key)
    if info.kind == Kind.ACTIVE:
        return await f(await sn.mounts(key))
    mounts = await sn.view(view_key, key)
    try:
        return await f(mounts)
    finally:
        await sn.remove(view_key)


@click.command(
    "diff",
    short_help=(
        "get the diff of two snapshots. the default second snapshot is the first snapshot's parent."
    ),
)
@click.option(
    "--media-type",
    default=OCI_LAYER_GZIP,
    show_default=True,
    help="media type to use for creating diff",
)
@click.option("--ref", default="", help="content upload reference to use")
@click.option("--keep", is_flag=True, help="keep diff content. up to creator to delete it.")
@click.option("--label", "labels", multiple=True, help="labels to attach to the image")
@click.argument("id_a", metavar="<idA>", required=False, default="")
@click.argument("id_b", metavar="[<idB>]", required=False, default="")
@click.pass_context
def diff_command(
    ctx: click.Context,
    *,
    media_type: str,
    ref: str,
    keep: bool,
    labels: tuple[str, ...],
    id_a: str,
    id_b: str,
) -> None:
    """Get the diff of two snapshots; the default second snapshot is the first one's parent.

    The layer is written to the content store and copied to stdout.
    """
    required(id_a, "snapshot id must be provided")
    extra = label_args(labels)
    if keep:
        extra[GC_ROOT] = rfc3339(datetime.now(UTC).replace(microsecond=0))
    snapshotter = ctx.meta.get("snapshotter")

    async def work(client: Client) -> None:
        async with client.with_lease():
            sn = client.snapshot_service(snapshotter)
            differ = client.diff_service()

            async def compare(lower: list[Mount], upper: list[Mount]) -> Descriptor:
                return await differ.compare(
                    lower, upper, media_type=media_type, ref=ref, labels=extra
                )

            if id_b:
                desc = await _with_mounts(
                    sn,
                    id_a,
                    lambda a: _with_mounts(sn, id_b, lambda b: compare(a, b), f"{id_b}-view-key"),
                    f"{id_a}-view-key",
                )
            else:
                info = await sn.stat(id_a)
                lower_key = f"{info.parent}-parent-view-{_unique()}"
                lower = await sn.view(lower_key, info.parent)
                try:
                    desc = await _with_mounts(
                        sn, id_a, lambda upper: compare(lower, upper), f"{id_a}-view-{_unique()}"
                    )
                finally:
                    await sn.remove(lower_key)
            reader = await client.content_store().reader_at(desc.digest)
            try:
                offset = 0
                while offset < reader.size:
                    chunk = await reader.read_at(offset, min(1 << 20, reader.size - offset))
                    if not chunk:
                        break
                    sys.stdout.buffer.write(chunk)
                    offset += len(chunk)
            finally:
                await reader.close()
            sys.stdout.buffer.flush()

    run(ctx, work)


@click.command("unpack", short_help="unpack applies layers from a manifest to a snapshot")
@click.argument("dgst", metavar="<digest>", required=False, default="")
@click.pass_context
def unpack_command(ctx: click.Context, dgst: str) -> None:
    """Unpack applies layers from a manifest to a snapshot."""
    from pycontainerd.core import digests
    from pycontainerd.ctr.commands.images_io import unpack_image

    digests.parse(dgst)
    snapshotter = ctx.meta.get("snapshotter")

    async def work(client: Client) -> None:
        from pycontainerd.client.client import DEFAULT_SNAPSHOTTER

        for image in await client.image_store().list():
            if image.target.digest == dgst:
                click.echo(f"unpacking {dgst} ({image.target.media_type})...", nl=False)
                try:
                    await unpack_image(client, image, snapshotter or DEFAULT_SNAPSHOTTER, None)
                except BaseException:
                    click.echo()
                    raise
                click.echo("done")
                return
        msg = "manifest not found"
        raise NotFoundError(msg)

    run(ctx, work)


def register(group: AliasGroup) -> None:
    """Add diff and unpack to the ``snapshots`` group."""
    group.add_command(diff_command)
    group.add_command(unpack_command)
