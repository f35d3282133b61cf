"""What every ``ctr`` command shares: the global options, aliases, running async work.

Importing this module must not import grpc: ``pycontainerd.client`` is
imported only inside :func:`run`, when a command really talks to a daemon.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.ctr.tabwriter import TabWriter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    from pycontainerd.client.client import Client

T = TypeVar("T")


class CommandError(Exception):
    """The command already reported its failure; exit with ``code``."""

    def __init__(self, code: int = 1) -> None:
        super().__init__(code)
        self.code = code


class UsageError(InvalidArgumentError):
    """A mistake on the command line, printed as bare text (upstream's ``errors.New``)."""

    def __str__(self) -> str:
        return self.message


def required(value: T, message: str) -> T:
    """``value``; InvalidArgumentError(``message``) when it is empty (a missing argument)."""
    if not value:
        raise InvalidArgumentError(message)
    return value


def exit_with(code: int) -> None:
    """End ``ctr`` with the task's exit status (nothing printed), like ``cli.NewExitError``."""
    if code != 0:
        raise CommandError(code)


@dataclass(frozen=True, slots=True, kw_only=True)
class CtrContext:
    """The global flags, as given on the command line."""

    address: str | None
    namespace: str
    timeout: str = "0s"
    connect_timeout: str = "0s"
    debug: bool = False
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def client(self, **kwargs: Any) -> Client:
        """A client for the daemon the flags name (imports grpc).

        ``--tls-ca``, ``--tls-cert`` and ``--tls-key`` (or ``CONTAINERD_TLS_*``)
        apply to a ``tcp://`` address.
        """
        from pycontainerd.client.address import TLSConfig
        from pycontainerd.client.client import Client

        tls = None
        if self.tls_ca or self.tls_cert or self.tls_key:
            tls = TLSConfig(ca=self.tls_ca, cert=self.tls_cert, key=self.tls_key)
        return Client(
            self.address,
            self.namespace,
            connect_timeout=self.connect_timeout or None,
            tls=tls,
            **kwargs,
        )

    def total_timeout(self) -> float | None:
        """``--timeout`` in seconds; ``None`` for no limit."""
        from pycontainerd.config.duration import parse_duration

        seconds = parse_duration(self.timeout) if self.timeout else 0.0
        return seconds or None


class AliasGroup(click.Group):
    """A group whose commands may have aliases (``ls`` for ``list``), listed in help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.aliases: dict[str, str] = {}

    def command_with_aliases(
        self, name: str, *aliases: str, **kwargs: Any
    ) -> Callable[[Callable[..., Any]], click.Command]:
        """Like ``@group.command(name)``, also reachable as each of ``aliases``."""

        def decorator(f: Callable[..., Any]) -> click.Command:
            cmd = self.command(name, **kwargs)(f)
            for alias in aliases:
                self.aliases[alias] = name
            return cmd

        return decorator

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, self.aliases.get(cmd_name, cmd_name))

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        return (cmd.name if cmd is not None else name), cmd, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            names = [name, *(a for a, target in self.aliases.items() if target == name)]
            rows.append((", ".join(names), cmd.get_short_help_str(limit=80)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def group(name: str, help_text: str) -> AliasGroup:
    """A subcommand group with alias support."""
    return AliasGroup(
        name=name, help=help_text, context_settings={"help_option_names": ["-h", "--help"]}
    )


def list_command(
    grp: AliasGroup, quiet_help: str, *, filters: bool = True
) -> Callable[[Callable[..., Any]], click.Command]:
    """``<group> list`` (alias ``ls``) with ``--quiet``/``-q`` and, with ``filters``, filters.

    The decorated function takes ``(ctx, quiet[, ...], filters)`` like any click command.
    """

    def decorator(f: Callable[..., Any]) -> click.Command:
        f = click.pass_context(f)
        if filters:
            f = click.argument("filters", nargs=-1)(f)
        f = click.option("--quiet", "-q", is_flag=True, help=quiet_help)(f)
        return grp.command_with_aliases("list", "ls")(f)

    return decorator


def print_table(
    header: str, rows: Iterable[str], *, minwidth: int = 1, padding: int = 1, padchar: str = " "
) -> None:
    """``header`` and ``rows`` (tab-separated cells) on stdout, aligned as Go's tabwriter does."""
    w = TabWriter(sys.stdout, minwidth, 8, padding, padchar)
    w.write(header)
    for row in rows:
        w.write(row)
    w.flush()


def print_list(
    items: Iterable[T],
    quiet: bool,
    key: Callable[[T], object],
    header: str,
    row: Callable[[T], str],
    **table: Any,
) -> None:
    """What a list command prints: ``key`` of each item a line with ``--quiet``, else the table.

    ``table`` holds :func:`print_table`'s layout options.
    """
    if quiet:
        for item in items:
            click.echo(key(item))
        return
    print_table(header, map(row, items), **table)


def run(ctx: click.Context, work: Callable[[Client], Awaitable[T]], **client_kwargs: Any) -> T:
    """Run ``work(client)`` in a fresh event loop with ``--timeout`` applied.

    The client is connected first (``--connect-timeout``) and closed after.
    """
    import asyncio  # here, not at the top: ``ctr --help`` never needs it (~50 ms)

    obj = ctx.find_object(CtrContext)
    if obj is None:  # pragma: no cover - always set by the root group
        msg = "ctr context missing"
        raise RuntimeError(msg)

    async def main() -> T:
        async with asyncio.timeout(obj.total_timeout()):
            async with obj.client(**client_kwargs) as client:
                return await work(client)

    try:
        return asyncio.run(main())
    except TimeoutError:
        from pycontainerd.core.errdefs import DeadlineExceededError

        raise DeadlineExceededError from None


def run_each(
    ctx: click.Context,
    items: Iterable[T],
    action: Callable[[Client, T], Awaitable[object]],
    failed: Callable[[T, Exception], Exception],
) -> None:
    """``action(client, item)`` for every item on one connection, going on after a failure.

    ``failed(item, error)`` reports a failure and returns the error to end with;
    the first of those is raised once every item had its turn (ctr's delete commands).
    """

    async def work(client: Client) -> Exception | None:
        first: Exception | None = None
        for item in items:
            try:
                await action(client, item)
            except Exception as exc:
                err = failed(item, exc)
                first = first or err
        return first

    err = run(ctx, work)
    if err is not None:
        raise err


def unable_to_delete(name: str, exc: Exception) -> Exception:
    """Log that ``name`` could not be deleted; the error to end with names it too."""
    log("error", f"unable to delete {name}", error=exc)
    return type(exc)(f"unable to delete {name}: {exc}")


def labels_command(
    grp: AliasGroup, name: str, *aliases: str, missing: str = ""
) -> Callable[[Callable[..., None]], click.Command]:
    """``<group> <name> <object> [<key>=<value> ...]``, the arguments parsed for the function.

    The decorated function is called as ``f(ctx, object, labels, **options)``
    (see :func:`object_with_labels`); with ``missing``, an empty object is
    ``InvalidArgumentError(missing)`` first. Its docstring is the help.
    """

    def decorator(f: Callable[..., None]) -> click.Command:
        @functools.wraps(f)
        def command(ctx: click.Context, /, args: tuple[str, ...], **options: Any) -> None:
            obj, labels = object_with_labels(args)
            if missing:
                required(obj, missing)
            f(ctx, obj, labels, **options)

        decorated = click.argument("args", nargs=-1)(click.pass_context(command))
        return grp.command_with_aliases(name, *aliases)(decorated)

    return decorator


def object_with_labels(args: Iterable[str]) -> tuple[str, dict[str, str]]:
    """First argument, and the rest parsed as ``key=value`` labels (containerd's rule)."""
    items = list(args)
    first = items[0] if items else ""
    return first, label_args(items[1:])


def label_args(items: Iterable[str]) -> dict[str, str]:
    """``key=value`` strings as a dict; a bare ``key`` means ``key=true``."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        labels[key] = value if sep else "true"
    return labels


def join_labels(labels: Mapping[str, str], empty: str = "") -> str:
    """``k=v`` pairs sorted and joined by ``,``; ``empty`` when there are none."""
    if not labels:
        return empty
    return ",".join(sorted(f"{k}={v}" for k, v in labels.items()))


def go_json(value: Any) -> str:
    """JSON indented with four spaces, ``<``, ``>`` and ``&`` escaped as Go does."""
    text = json.dumps(value, indent=4, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def log(level: str, msg: str, **fields: object) -> None:
    """A logrus-style line on stderr, as ``ctr`` logs per-item failures."""
    from datetime import UTC, datetime

    now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    parts = [f'time="{now}"', f"level={level}", f"msg={json.dumps(msg)}"]
    parts += [f"{k}={json.dumps(str(v))}" for k, v in fields.items()]
    sys.stderr.write(" ".join(parts) + "\n")
