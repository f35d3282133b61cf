"""``ctr content fetch``, ``fetch-object`` and ``push-object``: content from and to registries.

Attached to the ``content`` group by :func:`register` (called at the end of
:mod:`pycontainerd.ctr.commands.content`). Importing this module must not
import grpc.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from pycontainerd.ctr.commands.images_remote import debug_enabled, parse_platforms
from pycontainerd.ctr.common import label_args, required, run
from pycontainerd.ctr.registry import RegistryOptions, registry_flags, resolver

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.client.client import Client
    from pycontainerd.ctr.common import AliasGroup

FETCH_DESCRIPTION = """Fetch an image into containerd.

This command ensures that containerd has all the necessary resources to build
an image's rootfs and convert the configuration to a runtime format supported
by containerd.

This command uses the same syntax, of remote and object, as 'ctr fetch-object'.
"""


def register(content: AliasGroup) -> None:
    """Attach ``fetch``, ``fetch-object`` and ``push-object`` to the ``content`` group."""
    content.add_command(fetch)
    content.add_command(fetch_object)
    content.add_command(push_object)


@click.command(
    "fetch",
    help=FETCH_DESCRIPTION,
    short_help="Fetch all content for an image into containerd",
)
@registry_flags
@click.option("--label", "labels", multiple=True, help="labels to attach to the image")
@click.option(
    "--platform", "platform_specs", multiple=True, help="Pull content from a specific platform"
)
@click.option("--all-platforms", is_flag=True, help="pull content from all platforms")
@click.option("--all-metadata", is_flag=True, help="Pull metadata for all platforms")
@click.option(
    "--metadata-only", is_flag=True, help="Pull all metadata including manifests and configs"
)
@click.argument("ref", required=False, default="")
@click.pass_context
def fetch(  # noqa: PLR0917 - upstream's flags
    ctx: click.Context,
    registry: RegistryOptions,
    labels: tuple[str, ...],
    platform_specs: tuple[str, ...],
    all_platforms: bool,
    all_metadata: bool,
    metadata_only: bool,
    ref: str,
) -> None:
    """Fetch all content for an image into containerd: [flags] <remote>."""
    from pycontainerd.ctr.progress import Progress
    from pycontainerd.remotes.progress import Tracker
    from pycontainerd.remotes.pull import fetch as fetch_image

    required(ref, "please provide an image reference to fetch")
    wanted = parse_platforms(platform_specs)
    show = not debug_enabled(ctx)

    async def work(client: Client) -> None:
        tracker = Tracker()
        progress = Progress(tracker, sys.stdout, enabled=show)
        async with resolver(registry) as res, progress.showing():
            await fetch_image(
                client,
                ref,
                res,
                platforms=wanted,
                all_platforms=all_platforms,
                labels=label_args(labels),
                tracker=tracker,
                all_metadata=all_metadata,
                metadata_only=metadata_only,
            )

    run(ctx, work)


@click.command(
    "fetch-object",
    help="Fetch objects by identifier from a remote.",
    short_help="Retrieve objects from a remote",
)
@registry_flags
@click.argument("ref", required=False, default="")
@click.argument("hints", nargs=-1)
@click.pass_context
def fetch_object(
    ctx: click.Context, registry: RegistryOptions, ref: str, hints: tuple[str, ...]
) -> None:
    """Write the object ``ref`` resolves to on stdout: [flags] <remote> <object> [<hint>, ...]."""
    import contextlib

    del hints  # upstream accepts and ignores them too
    required(ref, "please provide a remote reference")

    async def work(_client: Client) -> None:
        out = sys.stdout.buffer
        async with resolver(registry) as res:
            name, desc = await res.resolve(ref)
            stream = res.fetcher(name).fetch(desc)
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    out.write(chunk)
        out.flush()

    run(ctx, work)


@click.command(
    "push-object",
    help="Push objects by identifier to a remote.",
    short_help="Push an object to a remote",
)
@registry_flags
@click.argument("ref", required=False, default="")
@click.argument("obj", metavar="OBJECT", required=False, default="")
@click.argument("media_type", metavar="TYPE", required=False, default="")
@click.pass_context
def push_object(
    ctx: click.Context, registry: RegistryOptions, ref: str, obj: str, media_type: str
) -> None:
    """Push a blob of the content store to a remote: [flags] <remote> <object> <type>."""
    from pycontainerd.core import content, digests
    from pycontainerd.core.types import Descriptor
    from pycontainerd.remotes import mediatypes as mt
    from pycontainerd.remotes import reference

    required(ref and obj and media_type, "please provide <remote> <object> <type>")
    dgst = digests.parse(obj)

    async def work(client: Client) -> None:
        store = client.content_store()
        info = await store.info(dgst)
        desc = Descriptor(media_type=media_type, digest=dgst, size=info.size)
        async with resolver(registry) as res:
            pusher = res.pusher(ref)
            if mt.is_manifest(media_type) or mt.is_index(media_type):
                data = await content.read_blob(store, dgst)
                await pusher.push_manifest(desc, data, reference.parse(ref).tag or "")
                return
            if await pusher.exists(desc):
                return

            async def chunks(offset: int) -> AsyncIterator[bytes]:
                reader = await store.reader_at(dgst)
                try:
                    while offset < reader.size:
                        data = await reader.read_at(offset, min(1 << 20, reader.size - offset))
                        if not data:
                            break
                        offset += len(data)
                        yield data
                finally:
                    await reader.close()

            await pusher.push_blob(desc, chunks)

    run(ctx, work)
