"""Which distribution to install for a plugin the daemon does not have.

The daemon composes whatever distributions are installed, so a plugin named
in ``required_plugins`` (or one a client expects) may simply be absent. The
start-up error keeps containerd's text (``required plugin [<uri>] not
included``) and adds what to install. Third-party plugins are unknown here;
their URI is all the message can name.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

STANDARD_EXTRA: Final = "pycontainerd-daemon[standard]"
"""The extra that installs the standard subsystems (also pulled in by ``pycontainerd``)."""

#: (URI prefix, distribution): the first prefix that matches wins, so exact
#: URIs come before the type-wide prefixes.
_PROVIDERS: Final = (
    ("io.containerd.snapshotter.v1.btrfs", "pycontainerd-snapshots-btrfs"),
    ("io.containerd.snapshotter.v1.overlayfs", "pycontainerd-snapshots"),
    ("io.containerd.snapshotter.v1.native", "pycontainerd-snapshots"),
    ("io.containerd.differ.v1.walking", "pycontainerd-snapshots"),
    ("io.containerd.grpc.v1.snapshots", "pycontainerd-snapshots"),
    ("io.containerd.grpc.v1.diff", "pycontainerd-snapshots"),
    ("io.containerd.event.v1.", "pycontainerd-events"),
    ("io.containerd.grpc.v1.events", "pycontainerd-events"),
    ("io.containerd.content.v1.", "pycontainerd-content"),
    ("io.containerd.service.v1.content-service", "pycontainerd-content"),
    ("io.containerd.grpc.v1.content", "pycontainerd-content"),
    ("io.containerd.metadata.v1.", "pycontainerd-metadata"),
    ("io.containerd.gc.v1.", "pycontainerd-metadata"),
    ("io.containerd.grpc.v1.namespaces", "pycontainerd-metadata"),
    ("io.containerd.grpc.v1.images", "pycontainerd-metadata"),
    ("io.containerd.grpc.v1.containers", "pycontainerd-metadata"),
    ("io.containerd.grpc.v1.leases", "pycontainerd-metadata"),
    ("io.containerd.runtime.v2.", "pycontainerd-runtime"),
    ("io.containerd.grpc.v1.tasks", "pycontainerd-runtime"),
)

_STANDARD: Final = frozenset(
    {
        "pycontainerd-events",
        "pycontainerd-content",
        "pycontainerd-snapshots",
        "pycontainerd-metadata",
        "pycontainerd-runtime",
    }
)


def provider(uri: str) -> str:
    """The distribution that provides the plugin ``uri`` ("" when no known one does)."""
    return next((dist for prefix, dist in _PROVIDERS if uri.startswith(prefix)), "")


def install_hint(uris: Iterable[str], disabled: Collection[str] = ()) -> str:
    """What to do about the missing plugins ``uris``, as a phrase for an error message.

    Plugins in ``disabled`` are installed but left out by ``disabled_plugins``;
    for the others, the distribution to install.

    Example:
        >>> install_hint(["io.containerd.grpc.v1.tasks"])
        "install pycontainerd-runtime (or 'pycontainerd-daemon[standard]' for the standard set)"
    """
    wanted = list(uris)
    off = sorted(u for u in wanted if u in disabled)
    absent = [u for u in wanted if u not in disabled]
    dists = sorted({provider(u) for u in absent} - {""})
    unknown = sorted(u for u in absent if not provider(u))
    parts: list[str] = []
    if off:
        parts.append(" ".join(off) + " left out by disabled_plugins")
    if dists:
        hint = "install " + ", ".join(dists)
        if _STANDARD.intersection(dists):
            hint += f" (or '{STANDARD_EXTRA}' for the standard set)"
        parts.append(hint)
    if unknown:
        parts.append(
            "no known distribution provides "
            + " ".join(unknown)
            + ": install the one that declares it in the pycontainerd.plugins entry points"
        )
    return "; ".join(parts)
