"""``ctr images``: image records (list, check, tag, label, remove)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from pycontainerd.core.errdefs import AlreadyExistsError, NotFoundError
from pycontainerd.ctr.common import (
    group,
    join_labels,
    labels_command,
    list_command,
    log,
    print_list,
    print_table,
    run,
    run_each,
    unable_to_delete,
)
from pycontainerd.ctr.units import bytes_size

if TYPE_CHECKING:
    from pycontainerd.client.client import Client
    from pycontainerd.core.images import Image

images = group("images", "Manage images")


@list_command(images, "Print only the image refs")
def list_images(ctx: click.Context, quiet: bool, filters: tuple[str, ...]) -> None:
    """List images known to containerd."""
    from pycontainerd.client import imagewalk
    from pycontainerd.core.platforms import format_platform

    async def work(client: Client) -> list[tuple[Image, int, str]]:
        try:
            found = await client.image_store().list(*filters)
        except Exception as exc:
            raise type(exc)(f"failed to list images: {exc}") from exc
        if quiet:
            return [(i, 0, "") for i in found]
        cs = client.content_store()
        rows = []
        for image in found:
            size, err = await imagewalk.image_size(cs, image.target)
            if err is not None:
                log("error", f"failed calculating size for image {image.name}", error=err)
            column = "-"
            try:
                specs = await imagewalk.image_platforms(cs, image.target)
            except Exception as exc:
                log("error", f"failed resolving platform for image {image.name}", error=exc)
            else:
                if specs:
                    column = ",".join(sorted({format_platform(p) for p in specs}))
            rows.append((image, size, column))
        return rows

    def row(found: tuple[Image, int, str]) -> str:
        image, size, column = found
        t = image.target
        labels = join_labels(image.labels, "-")
        return (
            f"{image.name}\t{t.media_type}\t{t.digest}\t{bytes_size(size)}\t{column}\t{labels}\t\n"
        )

    header = "REF\tTYPE\tDIGEST\tSIZE\tPLATFORMS\tLABELS\t\n"
    print_list(run(ctx, work), quiet, lambda found: found[0].name, header, row)


@images.command("check")
@click.option("--snapshotter", envvar="CONTAINERD_SNAPSHOTTER", default="", help="Snapshotter name")
@click.argument("filters", nargs=-1)
@click.pass_context
def check(ctx: click.Context, snapshotter: str, filters: tuple[str, ...]) -> None:
    """Check existing images to ensure all content is available locally."""
    from pycontainerd.client import imagewalk

    async def work(client: Client) -> list[str]:
        cs = client.content_store()
        lines = []
        for image in await client.image_store().list(*filters):
            available, required, present, missing = await imagewalk.check(cs, cs, image.target)
            status = "incomplete" if missing else "complete"
            req_size = sum(d.size for d in required)
            pres_size = sum(d.size for d in present)
            if available:
                status += f" ({len(present)}/{len(required)})"
                size = f"{bytes_size(pres_size)}/{bytes_size(req_size)}"
            else:
                status = f"unavailable ({len(present)}/?)"
                size = f"{bytes_size(pres_size)}/?"
            unpacked = "false"
            t = image.target
            lines.append(
                f"{image.name}\t{t.media_type}\t{t.digest}\t{status}\t{size}\t{unpacked}\n"
            )
        return lines

    lines = run(ctx, work)
    if lines:
        print_table("REF\tTYPE\tDIGEST\tSTATUS\tSIZE\tUNPACKED\t\n", lines)


@images.command("tag")
@click.option(
    "--force", is_flag=True, help="Force target_ref to be created, regardless if it already exists"
)
@click.option(
    "--local",
    is_flag=True,
    help="Run tag locally rather than through transfer API",
)
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
@click.pass_context
def tag(
    ctx: click.Context, force: bool, local: bool, source: str, targets: tuple[str, ...]
) -> None:
    """Tag an image: <source_ref> <target_ref> [<target_ref>, ...]."""
    from dataclasses import replace

    if not local:
        from pycontainerd.client.transfer import ImageStore

        async def by_transfer(client: Client) -> None:
            for target in targets:
                await client.transfer(ImageStore(source), ImageStore(target))
                click.echo(target)

        run(ctx, by_transfer)
        return

    async def work(client: Client) -> None:
        store = client.image_store()
        image = await store.get(source)
        for target in targets:
            record = replace(image, name=target)
            try:
                await store.create(record)
            except AlreadyExistsError:
                if not force:
                    raise
                await store.delete(target)
                await store.create(record)
            click.echo(target)

    run(ctx, work)


@labels_command(images, "label", missing="please specify an image")
@click.option("--replace-all", "-r", is_flag=True, help="Replace all labels")
def label(ctx: click.Context, name: str, labels: dict[str, str], replace_all: bool) -> None:
    """Set and clear labels for an image: <name> [<key>=<value>, ...]."""
    from pycontainerd.core.images import Image

    async def work(client: Client) -> Image:
        paths = ["labels"] if replace_all and labels else [f"labels.{k}" for k in labels]
        record = Image(name=name, labels={k: v for k, v in labels.items() if v})
        return await client.image_store().update(record, *paths)

    click.echo(join_labels(run(ctx, work).labels))


@images.command_with_aliases("delete", "del", "remove", "rm")
@click.option(
    "--sync", is_flag=True, help="Synchronously remove image and all associated resources"
)
@click.argument("refs", nargs=-1)
@click.pass_context
def delete(ctx: click.Context, sync: bool, refs: tuple[str, ...]) -> None:
    """Remove one or more images by reference."""

    async def delete_one(client: Client, item: tuple[int, str]) -> None:
        i, ref = item
        try:
            # the last delete of a --sync run waits for the garbage collection
            await client.image_store().delete(ref, sync=sync and i == len(refs) - 1)
        except NotFoundError:
            log("warning", f"{ref}: image not found")
            return
        click.echo(ref)

    run_each(ctx, enumerate(refs), delete_one, lambda item, exc: unable_to_delete(item[1], exc))


# -- registry commands (pull, push) live in images_remote.py --------------------------
from pycontainerd.ctr.commands import images_remote as _images_remote  # noqa: E402

_images_remote.register(images)
# -- end registry commands --------------------------------------------------------------

# -- archive and rootfs commands (import, export, mount, unmount, usage) live in images_io.py --
from pycontainerd.ctr.commands import images_io as _images_io  # noqa: E402

_images_io.register(images)
# -- end archive and rootfs commands ----------------------------------------------------
