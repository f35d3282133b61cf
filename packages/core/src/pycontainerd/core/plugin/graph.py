"""Dependency ordering of registrations (containerd's plugin ``Graph``).

The daemon initialises plugins in the order this module returns: every
provider of a type a plugin ``requires`` comes before that plugin. The input
is sorted by URI first, because pluggy's LIFO call order and entry-point
discovery order differ between installs; the result is therefore stable for a
given set of registrations.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.core.errdefs import FailedPreconditionError

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

    from pycontainerd.core.plugin.registration import Registration

ID_ALREADY_REGISTERED = "plugin: id already registered"


class PluginCycleError(FailedPreconditionError):
    """The ``requires`` of some registrations form a cycle.

    ``chain`` lists the URIs along the cycle, first and last being the same
    (``a -> b -> a``); ``str()`` shows that chain.
    """

    def __init__(self, chain: tuple[str, ...]) -> None:
        self.chain = chain
        super().__init__("plugin dependency cycle: " + " -> ".join(chain))


def ordered(
    registrations: Iterable[Registration],
    disabled: Collection[str] = (),
) -> list[Registration]:
    """Order ``registrations`` so that providers precede their requirers.

    The walk is containerd's: registrations are visited in URI order; before a
    registration is appended, each type in its ``requires`` is taken in turn
    and every other enabled registration of that type is visited (recursively,
    providers first). A registration is appended once.

    Args:
        registrations: what ``pycontainerd_plugins`` returned, in any order.
        disabled: URIs to leave out (``disabled_plugins``); a disabled
            registration does not satisfy anyone's ``requires``.

    Returns:
        The enabled registrations in initialisation order.

    Raises:
        ValueError: two registrations share a URI
            (``<uri>: plugin: id already registered``).
        PluginCycleError: the ``requires`` form a cycle.
    """
    seen: set[str] = set()
    enabled: list[Registration] = []
    for reg in registrations:
        if reg.uri in seen:
            msg = f"{reg.uri}: {ID_ALREADY_REGISTERED}"
            raise ValueError(msg)
        seen.add(reg.uri)
        if reg.uri not in disabled:
            enabled.append(reg)
    enabled.sort(key=lambda r: r.uri)

    done: set[str] = set()
    out: list[Registration] = []

    def visit(reg: Registration, stack: tuple[str, ...]) -> None:
        if reg.uri in done:
            return
        if reg.uri in stack:
            start = stack.index(reg.uri)
            raise PluginCycleError((*stack[start:], reg.uri))
        path = (*stack, reg.uri)
        for required in reg.requires:
            for dep in enabled:
                if dep.type == required and dep.uri != reg.uri:
                    visit(dep, path)
        done.add(reg.uri)
        out.append(reg)

    for reg in enabled:
        visit(reg, ())
    return out
