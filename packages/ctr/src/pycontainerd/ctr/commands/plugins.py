"""``ctr plugins``: what the daemon loaded (``Introspection.Plugins``)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from pycontainerd.core.errdefs import UnknownError
from pycontainerd.ctr.common import UsageError, go_json, group, list_command, run
from pycontainerd.ctr.tabwriter import TabWriter

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pycontainerd.client.client import Client
    from pycontainerd.client.proxies.introspection import PluginInfo
    from pycontainerd.core.platforms import Platform

#: Go's ``codes.Code`` names, by number.
CODE_NAMES = (
    "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted",
    "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated",
)  # fmt: skip

plugins = group("plugins", "Provides information about containerd plugins")


def pretty_platforms(platforms: Iterable[Platform]) -> str:
    """Unique ``os/arch[/variant]`` strings, sorted, joined by ``,``."""
    from pycontainerd.core.platforms import format_platform

    return ",".join(sorted({format_platform(p) for p in platforms}))


def code_name(code: int) -> str:
    """Go's name for a gRPC status code number."""
    return CODE_NAMES[code] if 0 <= code < len(CODE_NAMES) else f"Code({code})"


def status_of(plugin: PluginInfo) -> str:
    """``ok``, ``skip`` (the init error mentions ``skip plugin``) or ``error``."""
    if plugin.init_err is None:
        return "ok"
    return "skip" if "skip plugin" in plugin.init_err.message else "error"


@list_command(plugins, "Print only the plugin ids")
@click.option("--detailed", "-d", is_flag=True, help="Print detailed information about each plugin")
def list_plugins(  # noqa: PLR0912 - one branch per detailed field, as upstream
    ctx: click.Context, quiet: bool, detailed: bool, filters: tuple[str, ...]
) -> None:
    """Lists containerd plugins."""

    async def work(client: Client) -> list[PluginInfo]:
        return await client.introspection().plugins(*filters)

    found = run(ctx, work)
    if quiet:
        for p in found:
            click.echo(p.id)
        return
    w = TabWriter(sys.stdout, 4, 8, 4, " ")
    if detailed:
        for i, p in enumerate(found):
            if i:
                w.println("\t\t\t")
            w.println("Type:\t", p.type)
            w.println("ID:\t", p.id)
            if p.requires:
                w.println("Requires:\t")
                for r in p.requires:
                    w.println("\t", r)
            if p.platforms:
                w.println("Platforms:\t", pretty_platforms(p.platforms))
            if p.exports:
                w.println("Exports:\t")
                for k, v in sorted(p.exports.items()):
                    w.println("\t", k, "\t", v)
            if p.capabilities:
                w.println("Capabilities:\t", ",".join(p.capabilities))
            if p.init_err is not None:
                w.println("Error:\t")
                w.println("\t Code:\t", code_name(p.init_err.code))
                w.println("\t Message:\t", p.init_err.message)
        w.flush()
        return
    w.write("TYPE\tID\tPLATFORMS\tSTATUS\t\n")
    for p in found:
        platforms = pretty_platforms(p.platforms) or "-"
        w.write(f"{p.type}\t{p.id}\t{platforms}\t{status_of(p)}\t\n")
    w.flush()


RUNC_RUNTIME = "io.containerd.runc.v2"
RUNTIME_REQUEST_URL = "containerd.types.RuntimeRequest"
RUNC_OPTIONS_URL = "containerd.runc.v1.Options"
CONFIG_OPTIONS_URL = "runtimeoptions.v1.Options"


def _runtime_options(
    runtime: str, config_path: str, runc_binary: str, runc_root: str, *, runc_systemd_cgroup: bool
) -> tuple[str, bytes] | None:
    """The runtime options the 2.x ``ctr`` sends (type URL, marshalled), or None."""
    if (runc_binary or runc_systemd_cgroup) and runtime != RUNC_RUNTIME:
        msg = (
            "specifying runc-binary and runc-systemd-cgroup is only supported for "
            f'"{RUNC_RUNTIME}" runtime'
        )
        raise UsageError(msg)
    if runtime == RUNC_RUNTIME:
        if runc_systemd_cgroup:
            # This command has no --cgroup, so upstream's check always refuses.
            msg = (
                "option --runc-systemd-cgroup requires --cgroup to be set, "
                'e.g. "machine.slice:foo:deadbeef"'
            )
            raise UsageError(msg)
        from pycontainerd.api.types.runc.options import oci_pb2

        opts = oci_pb2.Options(binary_name=runc_binary, root=runc_root)
        return RUNC_OPTIONS_URL, opts.SerializeToString()
    if config_path:
        from pycontainerd.api.types.runtimeoptions.v1 import api_pb2

        return CONFIG_OPTIONS_URL, api_pb2.Options(config_path=config_path).SerializeToString()
    return None


def _options_json(type_url: str, value: bytes) -> object:
    """Runtime options as Go's ``encoding/json`` prints the decoded message (set fields only)."""
    from google.protobuf import json_format

    from pycontainerd.api.types.runc.options import oci_pb2
    from pycontainerd.api.types.runtimeoptions.v1 import api_pb2

    kinds: dict[str, Any] = {RUNC_OPTIONS_URL: oci_pb2.Options, CONFIG_OPTIONS_URL: api_pb2.Options}
    kind = kinds.get(type_url.removeprefix("type.googleapis.com/"))
    if kind is None:
        return None
    msg = kind()
    msg.ParseFromString(value)
    out = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    # Go prints integers as numbers (MessageToDict quotes 64-bit ones).
    return {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in out.items()}


@plugins.command("inspect-runtime")
@click.option(
    "--runtime",
    default=RUNC_RUNTIME,
    show_default=True,
    help="Runtime name or absolute path to runtime binary",
)
@click.option("--runtime-config-path", default="", help="Optional runtime config path")
@click.option("--runc-binary", default="", help="Specify runc-compatible binary")
@click.option("--runc-root", default="", help="Specify runc-compatible root")
@click.option("--runc-systemd-cgroup", is_flag=True, help="Start runc with systemd cgroup manager")
@click.pass_context
def inspect_runtime(
    ctx: click.Context,
    *,
    runtime: str,
    runtime_config_path: str,
    runc_binary: str,
    runc_root: str,
    runc_systemd_cgroup: bool,
) -> None:
    """Display runtime info (the shim's ``-info`` through ``Introspection.PluginInfo``)."""
    options = _runtime_options(
        runtime,
        runtime_config_path,
        runc_binary,
        runc_root,
        runc_systemd_cgroup=runc_systemd_cgroup,
    )

    async def work(client: Client) -> dict[str, Any]:
        from pycontainerd.api.errgrpc import rpc_errors
        from pycontainerd.api.services.introspection.v1 import (
            introspection_pb2,
            introspection_pb2_grpc,
        )
        from pycontainerd.api.types import introspection_pb2 as types_pb

        request = types_pb.RuntimeRequest(runtime_path=runtime)
        if options is not None:
            request.options.type_url, request.options.value = options
        req = introspection_pb2.PluginInfoRequest(type="io.containerd.runtime.v2", id="task")
        req.options.type_url = RUNTIME_REQUEST_URL
        req.options.value = request.SerializeToString()
        stub = introspection_pb2_grpc.IntrospectionStub(client.channel)
        try:
            with rpc_errors():
                resp = await stub.PluginInfo(
                    req, metadata=client.metadata(), timeout=client.timeout
                )
        except UnknownError as exc:
            # A plain error upstream: Go's ctr prints its text alone.
            raise RuntimeError(exc.message) from None
        info = types_pb.RuntimeInfo()
        info.ParseFromString(resp.extra.value)
        features: object = None
        if info.HasField("features"):
            features = json.loads(info.features.value)
        return {
            "Name": info.name,
            "Version": {"Version": info.version.version, "Revision": info.version.revision},
            "Options": (
                _options_json(info.options.type_url, info.options.value)
                if info.HasField("options")
                else None
            ),
            "Features": features,
            "Annotations": dict(sorted(info.annotations.items())) or None,
        }

    click.echo(go_json(run(ctx, work)))
