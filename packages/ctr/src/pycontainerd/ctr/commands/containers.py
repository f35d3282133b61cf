"""``ctr containers``: container records (create, list, info, label, remove)."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import click

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.ctr.commands.run import container_flags, flag_spec_options
from pycontainerd.ctr.common import (
    go_json,
    group,
    join_labels,
    label_args,
    labels_command,
    list_command,
    log,
    print_list,
    required,
    run,
    run_each,
)
from pycontainerd.ctr.units import rfc3339nano

if TYPE_CHECKING:
    from pycontainerd.client.client import Client
    from pycontainerd.core.containers import Container

containers = group("containers", "Manage containers")

#: Upstream's wording: the spec version its decoder speaks.
_SPEC_VERSION = "v1.0.2-dev"


def load_spec_file(path: str) -> dict[str, Any]:
    """The OCI spec in ``path`` (``--config``), with upstream's error texts.

    Raises:
        UsageError: the file cannot be read or is not a JSON object.
    """
    from pycontainerd.ctr.common import UsageError

    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        msg = f"cannot load spec config file: open {path}: {(exc.strerror or str(exc)).lower()}"
        raise UsageError(msg) from None
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        msg = (
            "decoding spec config file failed, current supported OCI runtime-spec : "
            f"{_SPEC_VERSION}: {exc}"
        )
        raise UsageError(msg) from None
    if not isinstance(spec, dict):
        msg = (
            "decoding spec config file failed, current supported OCI runtime-spec : "
            f"{_SPEC_VERSION}: not a JSON object"
        )
        raise UsageError(msg)
    return spec


@containers.command(
    "create",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@container_flags
@click.option("--config", "-c", default="", help="Path to the runtime-specific spec config file")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def create(ctx: click.Context, /, config: str, args: tuple[str, ...], **flags: Any) -> None:
    """Create container.

    ctr containers create [flags] Image|RootFS CONTAINER [COMMAND] [ARG...]

    With --config, the spec comes from that file as it is and the only
    argument is the container id (upstream's rule).
    """
    if config:
        container_id = args[0] if args else ""
        if len(args) > 1:
            msg = "with spec config file, only container id should be provided"
            raise InvalidArgumentError(msg)
        ref = ""
    else:
        ref = args[0] if args else ""
        container_id = args[1] if len(args) > 1 else ""
        required(ref, "image ref must be provided")
    required(container_id, "container id must be provided")
    labels = label_args(flags["label"])
    file_spec = load_spec_file(config) if config else None
    opts = [] if config else flag_spec_options(args[2:], flags)
    rootfs_dir = os.path.abspath(ref) if flags["rootfs"] and ref else ""

    async def work(client: Client) -> None:
        if file_spec is not None:
            await _create_from_spec(client, container_id, file_spec, labels, flags["runtime"])
            return
        from pycontainerd.client.containers import new_container

        await new_container(
            client,
            container_id,
            image="" if rootfs_dir else ref,
            rootfs=rootfs_dir,
            snapshotter=flags["snapshotter"],
            runtime=flags["runtime"],
            labels=labels,
            snapshot_labels=label_args(flags["snapshotter_label"]),
            spec_opts=opts,
        )

    run(ctx, work)


async def _create_from_spec(
    client: Client, container_id: str, spec: dict[str, Any], labels: dict[str, str], runtime: str
) -> None:
    """A container record with ``spec`` as given (no image, no snapshot), as upstream's ``-c``.

    Upstream also copies the container's labels into the spec's annotations.
    """
    from pycontainerd.client.oci import SPEC_TYPE_URL, spec_bytes
    from pycontainerd.core.containers import Container, RuntimeInfo
    from pycontainerd.core.types import AnyValue

    if labels:
        spec.setdefault("annotations", {}).update(labels)
    record = Container(
        id=container_id,
        runtime=RuntimeInfo(name=runtime),
        labels=labels,
        spec=AnyValue(type_url=SPEC_TYPE_URL, value=spec_bytes(spec)),
    )
    await client.container_store().create(record)


@list_command(containers, "Print only the container id")
def list_containers(ctx: click.Context, quiet: bool, filters: tuple[str, ...]) -> None:
    """List containers."""
    print_list(
        run(ctx, lambda client: client.container_store().list(*filters)),
        quiet,
        lambda c: c.id,
        "CONTAINER\tIMAGE\tRUNTIME\t\n",
        lambda c: f"{c.id}\t{c.image or '-'}\t{c.runtime.name}\t\n",
        minwidth=4,
        padding=4,
    )


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


@labels_command(containers, "label", missing="please specify a container")
def label(ctx: click.Context, cid: str, labels: dict[str, str]) -> None:
    """Set and clear labels for a container: <id> [<key>=<value>, ...]."""
    from dataclasses import replace

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
    required(ids, "must specify at least one container to delete")

    async def delete_one(client: Client, cid: str) -> None:
        store = client.container_store()
        c = await store.get(cid)
        await store.delete(cid)
        if not keep_snapshot and c.snapshot_key:
            await client.snapshot_service(c.snapshotter or None).remove(c.snapshot_key)

    def failed(cid: str, exc: Exception) -> Exception:
        log("error", "failed to delete container", error=exc)
        return exc

    run_each(ctx, ids, delete_one, failed)
