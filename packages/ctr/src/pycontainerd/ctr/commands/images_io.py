"""``ctr images import|export|mount|unmount|usage``: archives and image root filesystems.

Attached to the ``images`` group by :func:`register` (called at the end of
:mod:`pycontainerd.ctr.commands.images`). Import and export run client-side
like upstream's ``--local`` path (the default in 1.7): the archive streams
into the daemon's content store under a lease, the images are recorded,
then unpacked into the snapshotter, printing
``unpacking <name> (<digest>)...done`` per image.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

import click

from pycontainerd.core.errdefs import InvalidArgumentError, UnimplementedError
from pycontainerd.ctr.common import print_table, required, run
from pycontainerd.ctr.registry import registry_flags
from pycontainerd.ctr.units import bytes_size

if TYPE_CHECKING:
    from collections.abc import Callable

    from pycontainerd.client.client import Client
    from pycontainerd.core.images import Image
    from pycontainerd.core.platforms import Platform
    from pycontainerd.ctr.common import AliasGroup
    from pycontainerd.ctr.registry import RegistryOptions

IMPORT_DESCRIPTION = """Import images from a tar stream.

\b
Implemented formats:
- oci.v1
- docker.v1.1
- docker.v1.2


For OCI v1, you may need to specify --base-name because an OCI archive may
contain only partial image references (tags without the base image name).
If no base image name is provided, a name will be generated as "import-%{yyyy-MM-dd}".

\b
e.g.
  $ ctr images import --base-name foo/bar foobar.tar

If foobar.tar contains an OCI ref named "latest" and anonymous ref "sha256:deadbeef", the command
will create "foo/bar:latest" and "foo/bar@sha256:deadbeef" images in the containerd store.
"""

EXPORT_DESCRIPTION = """Export images to an OCI tar archive.

\b
Tar output is formatted as an OCI archive, a Docker manifest is provided for the platform.
Use '--skip-manifest-json' to avoid including the Docker manifest.json file.
Use '--platform' to define the output platform.
When '--all-platforms' is given all images in a manifest list must be available.
"""

GC_SNAPSHOT_PREFIX = "containerd.io/gc.ref.snapshot."
LEASE_EXPIRE_LABEL = "containerd.io/gc.expire"


def _snapshotter(name: str) -> str:
    from pycontainerd.client.client import DEFAULT_SNAPSHOTTER

    return name or DEFAULT_SNAPSHOTTER


def _open_input(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except FileNotFoundError:
        msg = f"open {path}: no such file or directory"
        raise InvalidArgumentError(msg) from None


async def unpack_image(
    client: Client, image: Image, snapshotter: str, platform: Platform | None
) -> str:
    """Unpack ``image`` for ``platform`` (default: the host) into ``snapshotter``; top chain ID."""
    from pycontainerd.client.containers import image_config, image_manifest
    from pycontainerd.remotes.unpack import unpack

    manifest = await image_manifest(client, image, platform)
    config = await image_config(client, manifest)
    sn = client.snapshot_service(snapshotter)
    async with client.with_lease():
        await unpack(
            client.content_store(),
            sn,
            client.diff_service(),
            manifest,
            snapshotter_name=snapshotter,
        )
    return config.chain_id


@click.command("import", help=IMPORT_DESCRIPTION, short_help="import images")
@click.option(
    "--base-name",
    default="",
    help="base image name for added images, when provided only images with this name prefix "
    "are imported",
)
@click.option("--digests", is_flag=True, help="whether to create digest images (default: false)")
@click.option(
    "--skip-digest-for-named",
    is_flag=True,
    help="skip applying --digests option to images named in the importing tar "
    "(use it in conjunction with --digests)",
)
@click.option(
    "--index-name", default="", help="image name to keep index as, by default index is discarded"
)
@click.option(
    "--all-platforms", is_flag=True, help="imports content for all platforms, false by default"
)
@click.option("--platform", default="", help="imports content for specific platform")
@click.option(
    "--no-unpack",
    is_flag=True,
    help="skip unpacking the images, cannot be used with --discard-unpacked-layers, "
    "false by default",
)
@click.option(
    "--local",
    is_flag=True,
    help="run import locally rather than through transfer API",
)
@click.option(
    "--compress-blobs",
    is_flag=True,
    help="compress uncompressed blobs when creating manifest (Docker format only)",
)
@click.option(
    "--discard-unpacked-layers",
    is_flag=True,
    help="allow the garbage collector to clean layers up from the content store after "
    "unpacking, cannot be used with --no-unpack, false by default",
)
@click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="",
    help="snapshotter name. Empty value stands for the default value.",
)
@click.argument("source", metavar="<in>", required=False, default="")
@click.pass_context
def import_command(
    ctx: click.Context,
    *,
    base_name: str,
    digests: bool,
    skip_digest_for_named: bool,
    index_name: str,
    all_platforms: bool,
    platform: str,
    no_unpack: bool,
    local: bool,
    compress_blobs: bool,
    discard_unpacked_layers: bool,
    snapshotter: str,
    source: str,
) -> None:
    """Import images."""
    from pycontainerd.core import platforms
    from pycontainerd.remotes.archive import ImportOptions, import_images, refs
    from pycontainerd.remotes.archive.importer import strict_matcher

    required(source, "please provide an archive to import (a path, or - for stdin)")
    if not local:
        _import_transfer(
            ctx,
            source,
            base_name=base_name,
            digests=digests,
            skip_digest_for_named=skip_digest_for_named,
            index_name=index_name,
            all_platforms=all_platforms,
            platform=platform,
            no_unpack=no_unpack,
            compress_blobs=compress_blobs,
            snapshotter=snapshotter,
        )
        return
    if compress_blobs:
        msg = "--compress-blobs is not supported"
        raise UnimplementedError(msg)
    prefix = base_name or f"import-{datetime.now().astimezone().strftime('%Y-%m-%d')}"
    opts = ImportOptions(
        ref_translator=refs.filter_ref_prefix(prefix) if base_name else refs.add_ref_prefix(prefix),
        index_name=index_name,
        all_platforms=all_platforms,
        discard_layers=discard_unpacked_layers,
    )
    if digests:
        opts.digest_ref = refs.digest_ref(prefix)
    if skip_digest_for_named:
        required(digests, "--skip-digest-for-named must be specified with --digests option")
        opts.skip_digest_for_named = True
    want = platforms.parse(platform) if platform else None
    if want is not None:
        opts.platform = strict_matcher(want)
    if discard_unpacked_layers and no_unpack:
        msg = "--discard-unpacked-layers and --no-unpack are incompatible options"
        raise InvalidArgumentError(msg)

    async def work(client: Client) -> None:
        stream = _open_input(source)
        async with client.with_lease():
            try:
                imported = await import_images(client, stream, opts)
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
            if no_unpack:
                return
            for image in imported:
                click.echo(f"unpacking {image.name} ({image.target.digest})...", nl=False)
                await unpack_image(client, image, _snapshotter(snapshotter), want)
                click.echo("done")

    run(ctx, work)


@click.command("export", help=EXPORT_DESCRIPTION, short_help="export images")
@click.option(
    "--skip-manifest-json",
    is_flag=True,
    help="do not add Docker compatible manifest.json to archive",
)
@click.option(
    "--skip-non-distributable",
    is_flag=True,
    help="do not add non-distributable blobs such as Windows layers to archive",
)
@click.option(
    "--platform", "platform_specs", multiple=True, help="Pull content from a specific platform"
)
@click.option("--all-platforms", is_flag=True, help="exports content from all platforms")
@click.option(
    "--local",
    is_flag=True,
    help="run export locally rather than through transfer API",
)
@click.argument("out", metavar="<out>", required=False, default="")
@click.argument("names", metavar="<image> ...", nargs=-1)
@click.pass_context
def export_command(
    ctx: click.Context,
    *,
    skip_manifest_json: bool,
    skip_non_distributable: bool,
    platform_specs: tuple[str, ...],
    all_platforms: bool,
    local: bool,
    out: str,
    names: tuple[str, ...],
) -> None:
    """Export images."""
    from pycontainerd.core import platforms
    from pycontainerd.remotes.archive import ExportOptions, export_images

    required(
        out and names, "please provide both an output filename and an image reference to export"
    )
    if not local:
        _export_transfer(
            ctx,
            out,
            names,
            platform_specs=platform_specs,
            all_platforms=all_platforms,
            skip_manifest_json=skip_manifest_json,
            skip_non_distributable=skip_non_distributable,
        )
        return
    opts = ExportOptions(
        platforms=[platforms.parse(p) for p in platform_specs],
        all_platforms=all_platforms,
        skip_manifest_json=skip_manifest_json,
        skip_non_distributable=skip_non_distributable,
    )

    async def work(client: Client) -> None:
        if out == "-":
            await export_images(client, sys.stdout.buffer, names, opts)
            return
        partial = f"{out}.partial-{os.getpid()}"
        try:
            with open(partial, "wb") as f:  # noqa: ASYNC230 - local file, written in chunks
                await export_images(client, f, names, opts)
            os.replace(partial, out)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)

    run(ctx, work)


def _import_transfer(
    ctx: click.Context,
    source: str,
    *,
    base_name: str,
    digests: bool,
    skip_digest_for_named: bool,
    index_name: str,
    all_platforms: bool,
    platform: str,
    no_unpack: bool,
    compress_blobs: bool,
    snapshotter: str,
) -> None:
    """The daemon imports (containerd 2.x's default): the archive streams to it."""
    from pycontainerd.client.transfer import ImageImportStream, ImageReference, ImageStore
    from pycontainerd.core import platforms
    from pycontainerd.ctr.transfer import require_local, run_transfer

    require_local(ctx, ("discard-unpacked-layers",))
    prefix, overwrite = base_name, False
    if not prefix:
        prefix = f"import-{datetime.now().astimezone().strftime('%Y-%m-%d')}"
        overwrite = True  # an automatic prefix gives way to the names in the archive
    ref = ImageReference(
        prefix,
        is_prefix=True,
        allow_overwrite=overwrite,
        add_digest=digests,
        skip_named_digest=digests and skip_digest_for_named,
    )
    target = platforms.parse(platform) if platform and not all_platforms else platforms.host()
    store = ImageStore(
        index_name,
        platforms=[] if all_platforms else [target],
        extra_references=[ref],
        unpacks=[] if no_unpack else [(target, snapshotter)],
    )
    stream = _open_input(source)
    try:
        run_transfer(
            ctx,
            lambda _client: (ImageImportStream(stream, force_compress=compress_blobs), store),
        )
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _export_transfer(
    ctx: click.Context,
    out: str,
    names: tuple[str, ...],
    *,
    platform_specs: tuple[str, ...],
    all_platforms: bool,
    skip_manifest_json: bool,
    skip_non_distributable: bool,
) -> None:
    """The daemon exports (containerd 2.x's default): the archive streams back."""
    from pycontainerd.client.transfer import ImageExportStream, ImageReference, ImageStore
    from pycontainerd.core import platforms
    from pycontainerd.ctr.transfer import run_transfer

    wanted = [platforms.parse(p) for p in platform_specs]
    store = ImageStore("", extra_references=[ImageReference(n) for n in names])
    if out == "-":
        sink: IO[bytes] = sys.stdout.buffer
        partial = ""
    else:
        partial = f"{out}.partial-{os.getpid()}"
        sink = open(partial, "wb")  # noqa: SIM115 - closed below, renamed on success
    try:
        run_transfer(
            ctx,
            lambda _client: (
                store,
                ImageExportStream(
                    sink,
                    platforms=wanted,
                    all_platforms=all_platforms,
                    skip_compatibility_manifest=skip_manifest_json,
                    skip_non_distributable=skip_non_distributable,
                ),
            ),
            show=out != "-",
        )
        if partial:
            sink.close()
            os.replace(partial, out)
    finally:
        if partial:
            sink.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)


def mount_flags(f: Callable[..., Any]) -> Callable[..., Any]:
    """The flags ``images mount`` and ``images unmount`` share (upstream's, both)."""
    f = click.option("--label", "labels", multiple=True, help="labels to attach to the image")(f)
    f = click.option(
        "--snapshotter",
        envvar="CONTAINERD_SNAPSHOTTER",
        default="",
        help="snapshotter name. Empty value stands for the default value.",
    )(f)
    return registry_flags(f)


@click.command("mount", short_help="mount an image to a target path")
@mount_flags
@click.option("--rw", is_flag=True, help="Enable write support on the mount")
@click.option("--platform", default="", help="Mount the image for the specified platform")
@click.argument("ref", metavar="<ref>", required=False, default="")
@click.argument("target", metavar="<target>", required=False, default="")
@click.pass_context
def mount_command(
    ctx: click.Context,
    *,
    registry: RegistryOptions,
    snapshotter: str,
    labels: tuple[str, ...],
    rw: bool,
    platform: str,
    ref: str,
    target: str,
) -> None:
    """Mount an image rootfs to a specified path.

    When you are done, use the unmount command.
    """
    from pycontainerd.client import mount
    from pycontainerd.core import namespaces, platforms
    from pycontainerd.core.errdefs import AlreadyExistsError, ContainerdError

    del registry, labels  # accepted for upstream compatibility; the image must exist locally
    required(ref, "please provide an image reference to mount")
    required(target, "please provide a target path to mount to")
    name = _snapshotter(snapshotter)
    want = platforms.parse(platform) if platform else platforms.host()

    async def work(client: Client) -> str:
        until = datetime.now(UTC) + timedelta(hours=24)
        lease_labels = {
            GC_SNAPSHOT_PREFIX + name: target,
            LEASE_EXPIRE_LABEL: until.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        created = False
        try:
            await client.lease_manager().create(target, labels=lease_labels)
            created = True
        except AlreadyExistsError:
            pass
        try:
            with namespaces.with_lease(target):
                image = await client.image_store().get(ref)
                try:
                    chain = await unpack_image(client, image, name, want)
                except ContainerdError as exc:
                    msg = f"error unpacking image: {exc}"
                    raise type(exc)(msg) from exc
                click.echo(chain)
                sn = client.snapshot_service(name)
                try:
                    mounts = await (sn.prepare(target, chain) if rw else sn.view(target, chain))
                except AlreadyExistsError:
                    mounts = await sn.mounts(target)
                try:
                    mount.mount_all(mounts, target)
                except ContainerdError:
                    with contextlib.suppress(ContainerdError):
                        await sn.remove(target)
                    raise
        except BaseException:
            if created:
                with contextlib.suppress(ContainerdError):
                    await client.lease_manager().delete(target)
            raise
        return target

    click.echo(run(ctx, work))


@click.command("unmount", short_help="unmount the image from the target")
@mount_flags
@click.option("--rm", "remove", is_flag=True, help="remove the snapshot after a successful unmount")
@click.argument("target", metavar="<target>", required=False, default="")
@click.pass_context
def unmount_command(
    ctx: click.Context,
    *,
    registry: RegistryOptions,
    snapshotter: str,
    labels: tuple[str, ...],
    remove: bool,
    target: str,
) -> None:
    """Unmount the image rootfs from the specified target."""
    from pycontainerd.client import mount
    from pycontainerd.core.errdefs import NotFoundError

    del registry, labels
    required(target, "please provide a target path to unmount from")
    mount.unmount_all(target)
    if remove:

        async def work(client: Client) -> None:
            try:
                await client.lease_manager().delete(target)
            except NotFoundError:
                pass
            except Exception as exc:
                msg = f"error deleting lease: {exc}"
                raise type(exc)(msg) from exc
            try:
                await client.snapshot_service(_snapshotter(snapshotter)).remove(target)
            except NotFoundError:
                pass
            except Exception as exc:
                msg = f"error removing snapshot: {exc}"
                raise type(exc)(msg) from exc

        run(ctx, work)
    click.echo(target)


@click.command("usage", short_help="Display usage of snapshots for a given image ref")
@click.option(
    "--snapshotter",
    envvar="CONTAINERD_SNAPSHOTTER",
    default="",
    help="snapshotter name. Empty value stands for the default value.",
)
@click.argument("ref", metavar="<ref>", required=False, default="")
@click.pass_context
def usage_command(ctx: click.Context, snapshotter: str, ref: str) -> None:
    """Display usage of snapshots for a given image ref."""
    from pycontainerd.client.containers import image_config, image_manifest
    from pycontainerd.core.errdefs import FailedPreconditionError, NotFoundError

    required(ref, "please provide an image reference to mount")
    name = _snapshotter(snapshotter)

    async def work(client: Client) -> list[tuple[str, int, int]]:
        try:
            image = await client.image_store().get(ref)
        except NotFoundError as exc:
            msg = f"failed to ensure if image {ref} exists: {exc}"
            raise NotFoundError(msg) from exc
        config = await image_config(client, await image_manifest(client, image))
        sn = client.snapshot_service(name)
        key = config.chain_id
        try:
            await sn.stat(key)
        except NotFoundError:
            msg = f"image {ref} isn't unpacked in snapshotter {name}"
            raise FailedPreconditionError(msg) from None
        rows = []
        while key:
            u = await sn.usage(key)
            rows.append((key, u.size, u.inodes))
            key = (await sn.stat(key)).parent
        return rows

    rows = run(ctx, work)
    print_table(
        "KEY\tSIZE\tINODES\t\n",
        (f"{key}\t{bytes_size(size)}\t{inodes}\t\n" for key, size, inodes in rows),
    )


def register(group: AliasGroup) -> None:
    """Add import, export, mount, unmount and usage to the ``images`` group."""
    for command in (import_command, export_command, mount_command, unmount_command, usage_command):
        group.add_command(command)
