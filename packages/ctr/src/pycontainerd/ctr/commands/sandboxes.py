"""``ctr sandboxes``: run, list and remove sandboxes (containerd 2.x's ``ctr sandboxes``).

Flags, aliases and output follow the 2.x ``ctr``: ``run|create|c|r
[--runtime] <pod-config.json> <sandbox-id>`` prints the id; ``list|ls
[--filters]`` prints ``ID CREATED RUNTIME``; ``remove|rm [--force|-f] <id>...``
stops and shuts each sandbox down and logs ``deleted: <id>``. ``info [--spec]
<id>`` is ours (2.1's ``ctr`` has none): the store record as JSON, the way
``ctr containers info`` prints a container.

``run`` takes the path containerd 2.2 took to make it work (2.1's ``ctr``
started a sandbox it never created, with no sandboxer, which 2.1's daemon
refused): the record names a sandboxer (the namespace's label
``containerd.io/defaults/sandboxer``, else ``shim``), then the controller
creates and starts the sandbox.

The calls go through the generated stubs on the client's channel.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

import click

from pycontainerd.ctr.common import go_json, group, log, print_table, run

if TYPE_CHECKING:
    from pycontainerd.api.types import sandbox_pb2
    from pycontainerd.client.client import Client

DEFAULT_RUNTIME: Final = "io.containerd.runc.v2"
DEFAULT_SANDBOXER: Final = "shim"
SANDBOXER_LABEL: Final = "containerd.io/defaults/sandboxer"
SPEC_URL: Final = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
EMPTY_URL: Final = "google.protobuf.Empty"

sandboxes = group("sandboxes", "Manage sandboxes")


def _stubs(client: Client) -> tuple[Any, Any]:
    from pycontainerd.api.services.sandbox.v1 import sandbox_pb2_grpc

    return (
        sandbox_pb2_grpc.StoreStub(client.channel),
        sandbox_pb2_grpc.ControllerStub(client.channel),
    )


async def _call(
    client: Client, rpc: Any, request: Any, failure: str = "", *, missing_ok: bool = False
) -> Any:
    """``rpc(request)`` with the client's namespace and timeout, its errors mapped from gRPC.

    With ``failure``, an error is raised as ``RuntimeError("<failure>: <error>")``;
    with ``missing_ok``, NotFound answers ``None``.
    """
    from pycontainerd.api.errgrpc import rpc_errors
    from pycontainerd.core.errdefs import NotFoundError

    try:
        with rpc_errors():
            return await rpc(request, metadata=client.metadata(), timeout=client.timeout)
    except Exception as exc:
        if missing_ok and isinstance(exc, NotFoundError):
            return None
        if not failure:
            raise
        msg = f"{failure}: {exc}"
        raise RuntimeError(msg) from exc


async def _default_sandboxer(client: Client) -> str:
    """The namespace's ``containerd.io/defaults/sandboxer`` label, else ``shim``."""
    from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc

    stub = namespace_pb2_grpc.NamespacesStub(client.channel)
    try:
        resp = await stub.Get(
            namespace_pb2.GetNamespaceRequest(name=client.namespace),
            metadata=client.metadata(),
            timeout=client.timeout,
        )
    except Exception:
        return DEFAULT_SANDBOXER
    return str(resp.namespace.labels.get(SANDBOXER_LABEL, "")) or DEFAULT_SANDBOXER


def go_time(seconds: int, nanos: int) -> str:
    """A UTC time as Go's ``time.Time.String()`` prints it (``... +0000 UTC``)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    frac = f"{nanos:09d}".rstrip("0")
    return f"{stamp}{'.' + frac if frac else ''} +0000 UTC"


@sandboxes.command_with_aliases("run", "create", "c", "r")
@click.option("--runtime", default=DEFAULT_RUNTIME, show_default=True, help="Runtime name")
@click.argument("args", nargs=-1)
@click.pass_context
def run_sandbox(ctx: click.Context, runtime: str, args: tuple[str, ...]) -> None:
    """Run a new sandbox (arguments: <pod-config.json> <sandbox-id>)."""
    if len(args) != 2:
        click.echo(ctx.get_help())
        return
    config, sandbox_id = args
    try:
        with open(config, "rb") as f:
            raw = f.read()
    except OSError as exc:
        msg = f"failed to read sandbox config: open {config}: {(exc.strerror or str(exc)).lower()}"
        raise click.ClickException(msg) from None
    try:
        json.loads(raw)
    except ValueError as exc:
        msg = f"failed to parse sandbox config: {exc}"
        raise click.ClickException(msg) from None

    async def work(client: Client) -> str:
        from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as pb
        from pycontainerd.api.types import sandbox_pb2 as types_pb

        store, controller = _stubs(client)
        sandboxer = await _default_sandboxer(client)
        sb = types_pb.Sandbox(sandbox_id=sandbox_id, sandboxer=sandboxer)
        sb.runtime.name = runtime
        sb.runtime.options.type_url = EMPTY_URL
        sb.spec.type_url = SPEC_URL
        sb.spec.value = raw
        now = time.time_ns()
        sb.created_at.FromNanoseconds(now)
        sb.updated_at.FromNanoseconds(now)
        try:
            created = (await _call(client, store.Create, pb.StoreCreateRequest(sandbox=sb))).sandbox
            await _call(
                client,
                controller.Create,
                pb.ControllerCreateRequest(
                    sandbox_id=sandbox_id, sandbox=created, sandboxer=sandboxer
                ),
                f"failed to create sandbox with {sandboxer} sandboxer",
            )
        except Exception as exc:
            msg = f"failed to create new sandbox: {exc}"
            raise RuntimeError(msg) from exc
        start = pb.ControllerStartRequest(sandbox_id=sandbox_id, sandboxer=sandboxer)
        await _call(client, controller.Start, start, "failed to start")
        return sandbox_id

    click.echo(run(ctx, work))


@sandboxes.command_with_aliases("list", "ls")
@click.option(
    "--filters",
    multiple=True,
    help="The list of filters to apply when querying sandboxes from the store",
)
@click.pass_context
def list_sandboxes(ctx: click.Context, filters: tuple[str, ...]) -> None:
    """List sandboxes."""

    async def work(client: Client) -> list[sandbox_pb2.Sandbox]:
        from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as pb

        store, _ = _stubs(client)
        request = pb.StoreListRequest(filters=list(filters))
        resp = await _call(client, store.List, request, "failed to list sandboxes")
        return list(resp.list)

    def row(sb: sandbox_pb2.Sandbox) -> str:
        created = go_time(sb.created_at.seconds, sb.created_at.nanos)
        return f"{sb.sandbox_id}\t{created}\t{sb.runtime.name}\t\n"

    print_table("ID\tCREATED\tRUNTIME\t\n", map(row, run(ctx, work)))


@sandboxes.command_with_aliases("remove", "rm")
@click.option("--force", "-f", is_flag=True, help="Ignore shutdown errors when removing sandbox")
@click.argument("ids", nargs=-1)
@click.pass_context
def remove(ctx: click.Context, force: bool, ids: tuple[str, ...]) -> None:
    """Remove sandboxes (arguments: <id> [<id>, ...])."""

    async def work(client: Client) -> None:
        from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as pb

        store, controller = _stubs(client)
        for sandbox_id in ids:
            record = {"sandbox_id": sandbox_id}
            try:
                sb = (await _call(client, store.Get, pb.StoreGetRequest(**record))).sandbox
            except Exception as exc:
                log("error", f"failed to load sandbox {sandbox_id}", error=exc)
                continue
            owner = {**record, "sandboxer": sb.sandboxer}
            try:
                await _call(client, controller.Stop, pb.ControllerStopRequest(**owner))
            except Exception as exc:
                log("error", f"failed to stop sandbox {sandbox_id}", error=exc)
                if not force:
                    continue
            teardown = (  # either may be gone already
                (controller.Shutdown, pb.ControllerShutdownRequest(**owner), "shutdown sandbox"),
                (store.Delete, pb.StoreDeleteRequest(**record), "delete sandbox from store"),
            )
            try:
                for rpc, request, what in teardown:
                    await _call(client, rpc, request, f"failed to {what}", missing_ok=True)
            except Exception as exc:
                log("error", f"failed to shutdown sandbox {sandbox_id}", error=exc)
                continue
            log("info", f"deleted: {sandbox_id}")

    run(ctx, work)


def rfc3339nano(seconds: int, nanos: int) -> str:
    """A UTC time in Go's ``time.RFC3339Nano`` layout (how ``encoding/json`` prints it)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    frac = f"{nanos:09d}".rstrip("0")
    return f"{stamp}{'.' + frac if frac else ''}Z"


def sandbox_json(sb: sandbox_pb2.Sandbox) -> dict[str, Any]:
    """The record the way ``ctr containers info`` prints a container's.

    Field names and order are those of containerd's sandbox record, and the
    spec, decoded, comes last (as the container's does).
    """
    spec: Any = None
    if sb.HasField("spec"):
        try:
            spec = json.loads(sb.spec.value)
        except ValueError:
            spec = {"type_url": sb.spec.type_url}
    return {
        "ID": sb.sandbox_id,
        "Labels": dict(sorted(sb.labels.items())) or None,
        "Runtime": {"Name": sb.runtime.name, "Options": None},
        "CreatedAt": rfc3339nano(sb.created_at.seconds, sb.created_at.nanos),
        "UpdatedAt": rfc3339nano(sb.updated_at.seconds, sb.updated_at.nanos),
        "Extensions": {k: {"type_url": v.type_url} for k, v in sorted(sb.extensions.items())}
        or None,
        "Sandboxer": sb.sandboxer,
        "Spec": spec,
    }


@sandboxes.command("info")
@click.option("--spec", is_flag=True, help="Only display the spec")
@click.argument("sandbox_id")
@click.pass_context
def info(ctx: click.Context, spec: bool, sandbox_id: str) -> None:
    """Get info about a sandbox (its record in the sandbox store)."""

    async def work(client: Client) -> sandbox_pb2.Sandbox:
        from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as pb

        store, _ = _stubs(client)
        found: sandbox_pb2.Sandbox = (
            await _call(client, store.Get, pb.StoreGetRequest(sandbox_id=sandbox_id))
        ).sandbox
        return found

    doc = sandbox_json(run(ctx, work))
    click.echo(go_json(doc["Spec"] if spec else doc))
