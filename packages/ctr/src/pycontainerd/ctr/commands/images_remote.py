"""``ctr images pull`` and ``ctr images push``: images from and to registries.

Attached to the ``images`` group by :func:`register` (called at the end of
:mod:`pycontainerd.ctr.commands.images`). As containerd 2.x's ``ctr``, both
go through the daemon's Transfer service (progress streamed back and drawn
as a tree) unless ``--local`` is given. With ``--local`` the pull runs
client-side, as upstream's ``ctr`` 1.6/1.7: the blobs are fetched into the daemon's content
store under a lease with a progress table on stdout (redrawn in place on a
terminal, printed once at the end otherwise; none with ``--debug``), then
each platform is unpacked into the snapshotter::

    unpacking linux/amd64 sha256:<target digest>...
    image chain ID: sha256:...        (with --print-chainid)
    done: 1.234s

Importing this module must not import grpc.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.ctr.common import CtrContext, label_args, required, run
from pycontainerd.ctr.registry import RegistryOptions, registry_flags, resolver

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pycontainerd.client.client import Client
    from pycontainerd.core.platforms import Platform
    from pycontainerd.ctr.common import AliasGroup
    from pycontainerd.remotes.pull import FetchResult, PlatformManifest

PULL_DESCRIPTION = """Fetch and prepare an image for use in containerd.

After pulling an image, it should be ready to use the same reference in a run
command. As part of this process, we do the following:

1. Fetch all resources into containerd.
2. Prepare the snapshot filesystem with the pulled resources.
3. Register metadata for the image.
"""

PUSH_DESCRIPTION = """Pushes an image reference from containerd.

All resources associated with the manifest reference will be pushed.
The ref is used to resolve to a locally existing image manifest.
The image manifest must exist before push. Creating a new image
manifest can be done through calculating the diff for layers,
creating the associated configuration, and creating the manifest
which references those resources.
"""


def parse_platforms(specs: Sequence[str]) -> list[Platform]:
    """``--platform`` values as platforms.

    Raises:
        InvalidArgumentError: a malformed specifier.
    """
    from pycontainerd.core import platforms

    return [platforms.parse(s) for s in specs]


def debug_enabled(ctx: click.Context) -> bool:
    """Whether ``ctr --debug`` was given (upstream shows no progress then)."""
    obj = ctx.find_object(CtrContext)
    return bool(obj and obj.debug)


def pick_manifest(manifests: Sequence[PlatformManifest], want: Platform) -> PlatformManifest | None:
    """The fetched manifest that serves ``want`` best (a platform-less one as a last resort)."""
    from pycontainerd.core import platforms

    for candidate in platforms.compatible(want):
        for m in manifests:
            if m.platform is not None and platforms.matches(candidate, m.platform):
                return m
    return next((m for m in manifests if m.platform is None), None)


async def unpack_platforms(
    client: Client,
    result: FetchResult,
    targets: Sequence[Platform],
    *,
    snapshotter: str,
    print_chainid: bool,
) -> None:
    """Unpack the fetched image for each of ``targets``, printing upstream's lines.

    A manifest the fetch unpacked already (``result.chain_ids``) is only reported.
    """
    from pycontainerd.config.duration import format_duration
    from pycontainerd.core.errdefs import NotFoundError
    from pycontainerd.core.platforms import format_platform
    from pycontainerd.remotes.unpack import unpack

    name = snapshotter or client.snapshotter
    store = client.content_store()
    sn = client.snapshot_service(name)
    differ = client.diff_service()
    start = time.monotonic()
    for plat in targets:
        click.echo(f"unpacking {format_platform(plat)} {result.image.target.digest}...")
        chosen = pick_manifest(result.manifests, plat)
        if chosen is None:
            msg = f"no match for platform {format_platform(plat)} in {result.image.target.digest}"
            raise NotFoundError(msg)
        top = result.chain_ids.get(chosen.descriptor.digest)
        if top is None:
            top = await unpack(store, sn, differ, chosen.descriptor, snapshotter_name=name)
        if print_chainid:
            click.echo(f"image chain ID: {top}")
    click.echo(f"done: {format_duration(time.monotonic() - start)}\t")


def register(images: AliasGroup) -> None:
    """Attach ``pull`` and ``push`` to the ``images`` group."""
    images.add_command(pull)
    images.add_command(push)


@click.command(
    "pull",
    help=PULL_DESCRIPTION,
    short_help="Pull an image from a remote",
)
@registry_flags
@click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="",
    help="snapshotter name. Empty value stands for the default value. [$CONTAINERD_SNAPSHOTTER]",
)
@click.option("--label", "labels", multiple=True, help="labels to attach to the image")
@click.option(
    "--platform", "platform_specs", multiple=True, help="Pull content from a specific platform"
)
@click.option("--all-platforms", is_flag=True, help="pull content and metadata from all platforms")
@click.option("--all-metadata", is_flag=True, help="Pull metadata for all platforms")
@click.option("--print-chainid", is_flag=True, help="Print the resulting image's chain ID")
@click.option(
    "--max-concurrent-downloads",
    type=int,
    default=0,
    help="Set the max concurrent downloads for each pull (default: 0)",
)
@click.option(
    "--skip-metadata",
    is_flag=True,
    help="Skips metadata for unused platforms (Image may be unable to be pushed without metadata)",
)
@click.option(
    "--local",
    is_flag=True,
    help="Fetch content from local client rather than using transfer service",
)
@click.argument("ref", required=False, default="")
@click.pass_context
def pull(  # noqa: PLR0917 - upstream's flags
    ctx: click.Context,
    registry: RegistryOptions,
    snapshotter: str,
    labels: tuple[str, ...],
    platform_specs: tuple[str, ...],
    all_platforms: bool,
    all_metadata: bool,
    print_chainid: bool,
    max_concurrent_downloads: int,
    skip_metadata: bool,
    local: bool,
    ref: str,
) -> None:
    """Pull an image from a remote: [flags] <ref>."""
    from pycontainerd.core import platforms
    from pycontainerd.ctr.progress import Progress
    from pycontainerd.remotes.imagewalk import image_platforms
    from pycontainerd.remotes.progress import Tracker
    from pycontainerd.remotes.pull import Unpacking, fetch

    required(ref, "please provide an image reference to pull")
    wanted = parse_platforms(platform_specs)
    image_labels = label_args(labels)
    show = not debug_enabled(ctx)
    if not local:
        _pull_transfer(
            ctx,
            registry,
            ref,
            wanted=wanted,
            all_platforms=all_platforms,
            all_metadata=not skip_metadata,
            labels=image_labels,
            snapshotter=snapshotter,
            show=show,
        )
        return

    def unpacked_early(m: PlatformManifest) -> bool:
        # with --all-platforms the targets are the image's known platforms
        # (image_platforms leaves out unknown/unknown entries such as attestations)
        if not all_platforms or m.platform is None:
            return True
        return "unknown" not in (m.platform.os, m.platform.architecture)

    async def work(client: Client) -> None:
        tracker = Tracker()
        progress = Progress(tracker, sys.stdout, enabled=show)
        name = snapshotter or client.snapshotter
        # layers are applied while later ones download; unpack_platforms then reports them
        unpacking = Unpacking(
            snapshotter_name=name,
            snapshotter=client.snapshot_service(name),
            applier=client.diff_service(),
            select=unpacked_early,
            track=False,
        )
        async with (
            resolver(registry, max_concurrent=max_concurrent_downloads) as res,
            client.with_lease(),
        ):
            async with progress.showing():
                result = await fetch(
                    client,
                    ref,
                    res,
                    platforms=wanted,
                    all_platforms=all_platforms,
                    labels=image_labels,
                    tracker=tracker,
                    unpacking=unpacking,
                    all_metadata=all_metadata,
                )
            if all_platforms:
                targets = await image_platforms(client.content_store(), result.image.target)
            else:
                targets = wanted or [platforms.host()]
            await unpack_platforms(
                client, result, targets, snapshotter=snapshotter, print_chainid=print_chainid
            )

    run(ctx, work)


def _pull_transfer(
    ctx: click.Context,
    registry: RegistryOptions,
    ref: str,
    *,
    wanted: list[Platform],
    all_platforms: bool,
    all_metadata: bool,
    labels: dict[str, str],
    snapshotter: str,
    show: bool,
) -> None:
    """The daemon pulls (containerd 2.x's default): registry -> image store, unpacked."""
    from pycontainerd.client.transfer import ImageStore
    from pycontainerd.core import platforms
    from pycontainerd.ctr.transfer import REGISTRY_LOCAL_ONLY, require_local, run_transfer
    from pycontainerd.ctr.transfer import registry as endpoint

    require_local(ctx, ("max-concurrent-downloads", "print-chainid", *REGISTRY_LOCAL_ONLY))
    if wanted and all_platforms:
        msg = "cannot specify both --platform and --all-platforms"
        raise InvalidArgumentError(msg)
    targets = [] if all_platforms else (wanted or [platforms.host()])
    store = ImageStore(
        ref,
        labels=labels,
        platforms=targets,
        all_metadata=all_metadata,
        unpacks=[(p, snapshotter) for p in targets],
    )
    run_transfer(ctx, lambda _client: (endpoint(registry, ref), store), show=show)


@click.command(
    "push",
    help=PUSH_DESCRIPTION,
    short_help="Push an image to a remote",
)
@registry_flags
@click.option("--manifest", default="", help="digest of manifest")
@click.option(
    "--manifest-type",
    default="application/vnd.oci.image.manifest.v1+json",
    show_default=True,
    help="media type of manifest digest",
)
@click.option(
    "--platform", "platform_spec", default="", help="push content from a specific platform"
)
@click.option(
    "--max-concurrent-uploaded-layers",
    type=int,
    default=0,
    help="Set the max concurrent uploaded layers for each push (default: 0)",
)
@click.option(
    "--local",
    "local_path",
    is_flag=True,
    help="Push content from local client rather than using transfer service",
)
@click.argument("remote", required=False, default="")
@click.argument("local", required=False, default="")
@click.pass_context
def push(  # noqa: PLR0917 - upstream's flags
    ctx: click.Context,
    registry: RegistryOptions,
    manifest: str,
    manifest_type: str,
    platform_spec: str,
    max_concurrent_uploaded_layers: int,
    local_path: bool,
    remote: str,
    local: str,
) -> None:
    """Push an image to a remote: [flags] <remote> [<local>]."""
    from pycontainerd.core import digests
    from pycontainerd.core.types import Descriptor
    from pycontainerd.ctr.progress import Progress
    from pycontainerd.remotes.progress import Tracker
    from pycontainerd.remotes.push import push as push_image

    required(remote, "please provide a remote image reference to push")
    if not local_path:
        from pycontainerd.client.transfer import ImageStore
        from pycontainerd.ctr.transfer import REGISTRY_LOCAL_ONLY, require_local, run_transfer
        from pycontainerd.ctr.transfer import registry as endpoint

        wanted = parse_platforms([platform_spec]) if platform_spec else []
        require_local(
            ctx,
            (
                "manifest",
                "manifest-type",
                "max-concurrent-uploaded-layers",
                *REGISTRY_LOCAL_ONLY,
                "http-dump",
                "http-trace",
            ),
        )
        store = ImageStore(local or remote, platforms=wanted)
        run_transfer(
            ctx,
            lambda _client: (store, endpoint(registry, remote)),
            show=not debug_enabled(ctx),
        )
        return
    root: Descriptor | None = None
    if manifest:
        try:
            digests.parse(manifest)
        except InvalidArgumentError as exc:
            msg = f"invalid manifest digest: {exc.message}"
            raise InvalidArgumentError(msg) from exc
        root = Descriptor(media_type=manifest_type, digest=manifest, size=0)
    plat = parse_platforms([platform_spec])[0] if platform_spec else None
    show = not debug_enabled(ctx)

    async def work(client: Client) -> None:
        tracker = Tracker()
        tracker.set(remote, "resolved")
        progress = Progress(tracker, sys.stdout, enabled=show)
        res = resolver(registry, max_concurrent=max_concurrent_uploaded_layers)
        async with res, progress.showing():
            await push_image(
                client,
                remote,
                res,
                local=local or None,
                platform=plat,
                tracker=tracker,
                manifest=root,
            )

    run(ctx, work)
