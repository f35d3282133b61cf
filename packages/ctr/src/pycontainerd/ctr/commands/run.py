"""``ctr run``: create a container from an image (or a host directory) and run its task.

``ctr run [flags] Image|RootFS ID [COMMAND] [ARG...]``: flags come before the
image; everything after the id is the command. Without ``--detach`` the
command's stdio is copied through FIFOs, signals are forwarded to it (or,
with ``--tty``, the local terminal is put in raw mode and its size follows),
the task is deleted when it exits, and ``ctr`` exits with its status.
``--rm`` also removes the container and its snapshot.
"""

from __future__ import annotations

import csv
import os
from typing import TYPE_CHECKING, Any

import click

from pycontainerd.ctr.attach import start_task
from pycontainerd.ctr.common import UsageError, exit_with, label_args, run

if TYPE_CHECKING:
    from collections.abc import Callable

    from click.decorators import FC

    from pycontainerd.client.client import Client
    from pycontainerd.client.oci import SpecOpt


def parse_mount(text: str) -> dict[str, Any]:
    """``type=bind,src=/a,dst=/b,options=rbind:ro`` -> an OCI mount dict.

    Raises:
        InvalidArgumentError: a field without ``=`` or an unknown key.
    """
    mount: dict[str, Any] = {"destination": "", "type": "", "source": "", "options": []}
    for fields in csv.reader([text]):
        for item in fields:
            key, sep, value = item.partition("=")
            if not sep:
                msg = "invalid mount specification: expected key=val"
                raise UsageError(msg)
            if key == "type":
                mount["type"] = value
            elif key in {"source", "src"}:
                mount["source"] = value
            elif key in {"destination", "dst"}:
                mount["destination"] = value
            elif key == "options":
                mount["options"] = value.split(":")
            else:
                msg = f'mount option "{key}" not supported'
                raise UsageError(msg)
    return mount


def read_env_file(path: str) -> list[str]:
    """``KEY=VALUE`` lines of ``path`` (blank lines and ``#`` comments skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        msg = f"env file {path}: {exc.strerror or exc}"
        raise UsageError(msg) from None
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def parse_annotations(items: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` annotations; a bare key is an error (upstream's rule)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            msg = f"invalid key=value format annotation: {item}"
            raise UsageError(msg)
        out[key] = value
    return out


def spec_options(  # noqa: PLR0912 - one branch per flag
    *,
    args: tuple[str, ...],
    env: tuple[str, ...],
    env_file: str,
    mounts: tuple[str, ...],
    cwd: str,
    tty: bool,
    privileged: bool,
    net_host: bool,
    read_only: bool,
    memory_limit: int,
    cpus: float,
    hostname: str,
    annotations: tuple[str, ...],
    allow_new_privs: bool,
) -> list[SpecOpt]:
    """The spec options the flags ask for, in upstream's order (after the image's config)."""
    from pycontainerd.client import oci

    opts: list[SpecOpt] = []
    if env_file:
        opts.append(oci.with_env(read_env_file(env_file)))
    if env:
        opts.append(oci.with_env(env))
    if mounts:
        opts.append(oci.with_mounts([parse_mount(m) for m in mounts]))
    if read_only:

        def readonly(spec: dict[str, Any]) -> None:
            spec["root"]["readonly"] = True

        opts.append(readonly)
    if args:
        opts.append(oci.with_process_args(*args))
    if cwd:
        opts.append(oci.with_cwd(cwd))
    if tty:
        opts.append(oci.with_tty)
    if privileged:
        opts.append(oci.with_privileged)
    if net_host:
        opts.append(oci.with_host_network)
    if memory_limit:
        opts.append(oci.with_memory_limit(memory_limit))
    if cpus:
        opts.append(oci.with_cpus(cpus))
    if hostname:
        opts.append(oci.with_hostname(hostname))
    if annotations:
        opts.append(oci.with_annotations(parse_annotations(annotations)))
    if allow_new_privs:

        def new_privs(spec: dict[str, Any]) -> None:
            spec["process"]["noNewPrivileges"] = False

        opts.append(new_privs)
    return opts


#: The flags ``run`` and ``containers create`` share (upstream's snapshotter and
#: container flags), in the order their help lists them.
CONTAINER_FLAGS: tuple[Callable[[FC], FC], ...] = (
    click.option(
        "--snapshotter",
        envvar="CONTAINERD_SNAPSHOTTER",
        default="",
        help="Snapshotter name. Empty value stands for the default value.",
    ),
    click.option(
        "--snapshotter-label",
        multiple=True,
        help="Labels added to the new snapshot for this container.",
    ),
    click.option("--cwd", default="", help="Specify the working directory of the process"),
    click.option(
        "--env",
        multiple=True,
        help="Specify additional container environment variables (e.g. FOO=bar)",
    ),
    click.option(
        "--env-file",
        default="",
        help="Specify additional container environment variables in a file"
        "(e.g. FOO=bar, one per line)",
    ),
    click.option("--label", multiple=True, help="Specify additional labels (e.g. foo=bar)"),
    click.option(
        "--annotation", multiple=True, help="Specify additional OCI annotations (e.g. foo=bar)"
    ),
    click.option(
        "--mount",
        "mounts",
        multiple=True,
        help="Specify additional container mount "
        "(e.g. type=bind,src=/tmp,dst=/host,options=rbind:ro)",
    ),
    click.option("--net-host", is_flag=True, help="Enable host networking for the container"),
    click.option("--privileged", is_flag=True, help="Run privileged container"),
    click.option("--read-only", is_flag=True, help="Set the containers filesystem as readonly"),
    click.option(
        "--runtime", default="io.containerd.runc.v2", show_default=True, help="Runtime name"
    ),
    click.option("--tty", "-t", is_flag=True, help="Allocate a TTY for the container"),
    click.option(
        "--allow-new-privs", is_flag=True, help="Turn off OCI spec's NoNewPrivileges feature flag"
    ),
    click.option(
        "--memory-limit",
        type=click.IntRange(min=0),
        default=0,
        help="Memory limit (in bytes) for the container",
    ),
    click.option(
        "--rootfs",
        is_flag=True,
        help="Use custom rootfs that is not managed by containerd snapshotter",
    ),
)


def container_flags(command: FC) -> FC:
    """Add :data:`CONTAINER_FLAGS` to a click command."""
    for option in reversed(CONTAINER_FLAGS):
        command = option(command)
    return command


def flag_spec_options(args: tuple[str, ...], flags: dict[str, Any]) -> list[SpecOpt]:
    """:func:`spec_options` from the parsed :data:`CONTAINER_FLAGS` (and ``run``'s own, if any)."""
    return spec_options(
        args=args,
        env=flags["env"],
        env_file=flags["env_file"],
        mounts=flags["mounts"],
        cwd=flags["cwd"],
        tty=flags["tty"],
        privileged=flags["privileged"],
        net_host=flags["net_host"],
        read_only=flags["read_only"],
        memory_limit=flags["memory_limit"],
        cpus=flags.get("cpus", 0.0),
        hostname=flags.get("hostname", ""),
        annotations=flags["annotation"],
        allow_new_privs=flags["allow_new_privs"],
    )


@click.command(
    "run",
    context_settings={
        "help_option_names": ["-h", "--help"],
        "ignore_unknown_options": True,
        "allow_interspersed_args": False,
    },
)
@click.option(
    "--rm",
    "remove",
    is_flag=True,
    help="Remove the container after running, cannot be used with --detach",
)
@click.option("--null-io", is_flag=True, help="Send all IO to /dev/null")
@click.option(
    "--detach",
    "-d",
    is_flag=True,
    help="Detach from the task after it has started execution, cannot be used with --rm",
)
@click.option("--fifo-dir", default="", help="Directory used for storing IO FIFOs")
@click.option("--pid-file", default="", help="File path to write the task's pid")
@click.option("--cpus", type=float, default=0.0, help="Set the CFS cpu quota")
@click.option("--hostname", default="", help="Set the container's host name")
@click.option(
    "--user",
    "-u",
    default="",
    help="Username or user id, group optional (format: <name|uid>[:<group|gid>])",
)
@click.option("--platform", default="", help="Run image for specific platform")
@container_flags
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run_command(  # noqa: PLR0917 - click passes one parameter per flag
    ctx: click.Context,
    /,
    remove: bool,
    null_io: bool,
    detach: bool,
    fifo_dir: str,
    pid_file: str,
    user: str,
    platform: str,
    args: tuple[str, ...],
    **flags: Any,
) -> None:
    """Run a container.

    ctr run [flags] Image|RootFS ID [COMMAND] [ARG...]
    """
    if remove and detach:
        msg = "flags --detach and --rm cannot be specified together"
        raise UsageError(msg)
    ref = args[0] if args else ""
    container_id = args[1] if len(args) > 1 else ""
    if not ref:
        msg = "image ref must be provided"
        raise UsageError(msg)
    if not container_id:
        msg = "container id must be provided"
        raise UsageError(msg)
    opts = flag_spec_options(args[2:], flags)

    rootfs = bool(flags["rootfs"])
    rootfs_dir = os.path.abspath(ref) if rootfs else ""

    async def work(client: Client) -> int:
        from pycontainerd.client.containers import delete_container, new_container
        from pycontainerd.core import platforms

        record = await new_container(
            client,
            container_id,
            image="" if rootfs else ref,
            rootfs=rootfs_dir,
            snapshotter=flags["snapshotter"],
            runtime=flags["runtime"],
            labels=label_args(flags["label"]),
            snapshot_labels=label_args(flags["snapshotter_label"]),
            spec_opts=opts,
            user=user,
            platform=platforms.parse(platform) if platform else None,
        )
        try:
            return await start_task(
                client,
                record,
                tty=flags["tty"],
                detach=detach,
                null_io=null_io,
                fifo_dir=fifo_dir,
                pid_file=pid_file,
            )
        finally:
            if remove:
                await delete_container(client, container_id)

    exit_with(run(ctx, work))
