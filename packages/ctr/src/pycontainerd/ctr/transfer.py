"""What the transfer paths of ``ctr images pull/push/import/export/tag`` share.

As containerd 2.x's ``ctr``, these commands move images through the daemon's
Transfer service unless ``--local`` is given; flags that only the client-side
path honours are refused without ``--local`` (``"--<flag>" requires "--local"
flag``). Progress streams back from the daemon and is drawn by
:class:`pycontainerd.ctr.progress.TransferView`.

Importing this module must not import grpc.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.ctr.common import run

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from pycontainerd.client.client import Client
    from pycontainerd.client.transfer import Endpoint, OCIRegistry
    from pycontainerd.ctr.registry import RegistryOptions


def require_local(ctx: click.Context, names: tuple[str, ...]) -> None:
    """Refuse client-side-only flags on the transfer path (upstream's check and text).

    Raises:
        InvalidArgumentError: one of ``names`` (flag names without dashes) was given.
    """
    for name in names:
        param = name.replace("-", "_")
        source = ctx.get_parameter_source(param)
        if source is not None and source.name == "COMMANDLINE":
            msg = f'"--{name}" requires "--local" flag'
            raise InvalidArgumentError(msg)


REGISTRY_LOCAL_ONLY = ("skip-verify", "tlscacert", "tlscert", "tlskey")
"""Registry flags the transfer path cannot carry (upstream's list)."""


def registry(opts: RegistryOptions, ref: str) -> OCIRegistry:
    """The ``OCIRegistry`` endpoint of ``ref`` with the registry flags' hosts dir, scheme, user."""
    from pycontainerd.client.transfer import OCIRegistry
    from pycontainerd.ctr.registry import credentials

    creds = credentials(opts.user)
    answer: Callable[[str], Any] | None = None
    if creds is not None or opts.refresh:

        def answer(_host: str) -> tuple[str, str] | None:
            return creds if creds is not None else ("", opts.refresh)

    return OCIRegistry(
        ref,
        host_dir=opts.hosts_dir,
        default_scheme="http" if opts.plain_http else "",
        credentials=answer,
    )


def run_transfer(
    ctx: click.Context,
    make: Callable[[Client], tuple[Endpoint, Endpoint]],
    *,
    show: bool = True,
    after: Callable[[], None] | None = None,
) -> None:
    """Run one transfer with the progress tree on stdout."""
    from pycontainerd.ctr.progress import TransferView

    view = TransferView(sys.stdout, enabled=show)

    async def work(client: Client) -> None:
        src, dst = make(client)
        async with view.showing():
            await client.transfer(src, dst, progress=view.handle)

    run(ctx, work)
    if after is not None:
        after()
