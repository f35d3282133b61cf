"""``ctr content``: blobs and ingests in the content store."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from pycontainerd.core import digests
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    NotFoundError,
    UnavailableError,
)
from pycontainerd.ctr.common import (
    group,
    join_labels,
    labels_command,
    list_command,
    log,
    print_list,
    print_table,
    required,
    run,
    run_each,
)
from pycontainerd.ctr.units import human_duration, human_size, since

if TYPE_CHECKING:
    from pycontainerd.client.client import Client
    from pycontainerd.core.content import Info, Status

content = group("content", "Manage content")
CHUNK = 1 << 20


@list_command(content, "Print only the blob digest")
def list_content(ctx: click.Context, quiet: bool, filters: tuple[str, ...]) -> None:
    """List all blobs in the store."""

    async def work(client: Client) -> list[Info]:
        return [info async for info in client.content_store().walk(*filters)]

    def row(info: Info) -> str:
        age = human_duration(since(info.created_at))
        return f"{info.digest}\t{human_size(info.size)}\t{age}\t{join_labels(info.labels, '-')}\n"

    header = "DIGEST\tSIZE\tAGE\tLABELS\n"
    print_list(run(ctx, work), quiet, lambda info: info.digest, header, row, padchar="\t")


@content.command("active")
@click.option("--timeout", "-t", default="0s", help="Total timeout for fetch")
@click.option(
    "--root",
    default="/tmp/content",  # noqa: S108 - upstream's (unused) default
    help="Path to content store root",
)
@click.argument("match", required=False, default="")
@click.pass_context
def active(ctx: click.Context, timeout: str, root: str, match: str) -> None:
    """Display active transfers."""

    async def work(client: Client) -> list[Status]:
        return await client.content_store().list_statuses(*([match] if match else []))

    statuses = run(ctx, work)
    rows = (
        f"{st.ref}\t{human_size(st.offset)}\t{human_duration(since(st.started_at))}\t\n"
        for st in statuses
    )
    print_table("REF\tSIZE\tAGE\t\n", rows, padchar="\t")


@content.command("get")
@click.argument("digest")
@click.pass_context
def get(ctx: click.Context, digest: str) -> None:
    """Get the data for an object."""
    dgst = str(digests.parse(digest))

    async def work(client: Client) -> None:
        reader = await client.content_store().reader_at(dgst)
        out = sys.stdout.buffer
        async for chunk in reader.stream():
            out.write(chunk)
        out.flush()

    run(ctx, work)


@content.command("ingest")
@click.option("--expected-size", type=int, default=0, help="Validate against provided size")
@click.option("--expected-digest", default="", help="Verify content against expected digest")
@click.argument("ref", required=False, default="")
@click.pass_context
def ingest(ctx: click.Context, expected_size: int, expected_digest: str, ref: str) -> None:
    """Accept content into the store (from stdin)."""
    if expected_digest:
        digests.parse(expected_digest)
    required(ref, "must specify a transaction reference")

    async def work(client: Client) -> None:
        import asyncio

        store = client.content_store()
        delay = 0.016
        writer = None
        while writer is None:
            try:
                writer = await store.writer(ref, total=expected_size, expected=expected_digest)
            except AlreadyExistsError:
                return
            except UnavailableError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        try:
            offset = (await writer.status()).offset
            if offset:
                # stdin cannot seek: restart the ingest from the beginning
                await writer.truncate(0)
            stdin = sys.stdin.buffer
            while chunk := await asyncio.to_thread(stdin.read, CHUNK):
                await writer.write(chunk)
            try:
                await writer.commit(expected_size, expected_digest)
            except AlreadyExistsError:
                return
        finally:
            await writer.close()

    run(ctx, work)


@labels_command(content, "label")
def label(ctx: click.Context, obj: str, labels: dict[str, str]) -> None:
    """Add labels to content: <digest> [<label>=<value> ...]."""
    dgst = str(digests.parse(obj))

    async def work(client: Client) -> Info:
        from pycontainerd.core.content import Info

        store = client.content_store()
        if not labels:
            return await store.info(dgst)
        info = Info(digest=dgst, labels={k: v for k, v in labels.items() if v})
        return await store.update(info, *(f"labels.{k}" for k in labels))

    info = run(ctx, work)
    click.echo(join_labels(info.labels))


@content.command_with_aliases("delete", "del", "remove", "rm")
@click.argument("args", nargs=-1)
@click.pass_context
def delete(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Permanently delete one or more blobs. Deleted blobs are printed."""

    async def delete_one(client: Client, arg: str) -> None:
        dgst = str(digests.parse(arg))
        try:
            await client.content_store().delete(dgst)
        except NotFoundError:
            return
        click.echo(dgst)

    def failed(arg: str, exc: Exception) -> Exception:
        log("error", f"could not delete {arg}", error=exc)
        return exc

    run_each(ctx, args, delete_one, failed)


# -- registry commands (fetch, fetch-object, push-object) live in content_remote.py ---
from pycontainerd.ctr.commands import content_remote as _content_remote  # noqa: E402

_content_remote.register(content)
# -- end registry commands --------------------------------------------------------------
