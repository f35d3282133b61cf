"""Filter adaptors for content infos and ingest statuses (containerd's ``AdaptInfo``).

Fields: an ``Info`` exposes ``digest``, ``size`` (upstream's adaptor leaves
it out; the core contract lists it) and ``labels.<key>``; a ``Status``
exposes ``ref``. The grammar is that of
``pycontainerd.core.filters``: filter strings are OR-ed, the selectors inside
one string are AND-ed.

Importing this module must not import grpc.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from pycontainerd.core import filters as core_filters

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence


class _HasInfoFields(Protocol):
    @property
    def digest(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def size(self) -> int: ...


class _HasRef(Protocol):
    @property
    def ref(self) -> str: ...


def adapt_info(info: _HasInfoFields) -> core_filters.Adaptor:
    """Field lookup for a blob's info: ``digest``, ``size``, ``labels.<key>``."""
    labels = core_filters.joined_map(info.labels)

    def field(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if not fieldpath:
            return "", False
        if fieldpath[0] == "digest" and len(fieldpath) == 1:
            return str(info.digest), True
        if fieldpath[0] == "size" and len(fieldpath) == 1:
            return str(info.size), True
        if fieldpath[0] == "labels" and len(fieldpath) > 1:
            return labels(fieldpath[1:])
        return "", False

    return core_filters.AdaptorFunc(field)


def adapt_status(status: _HasRef) -> core_filters.Adaptor:
    """Field lookup for an ingest status: ``ref``."""

    def field(fieldpath: Sequence[str]) -> tuple[str, bool]:
        if len(fieldpath) == 1 and fieldpath[0] == "ref":
            return status.ref, True
        return "", False

    return core_filters.AdaptorFunc(field)


def info_matcher(filters: Iterable[str]) -> Callable[[_HasInfoFields], bool]:
    """Compile ``filters`` into a predicate over infos.

    Raises:
        InvalidArgumentError: a filter does not parse.
    """
    flt = core_filters.parse(*filters)
    return lambda info: flt.match(adapt_info(info))


def status_matcher(filters: Iterable[str]) -> Callable[[_HasRef], bool]:
    """Compile ``filters`` into a predicate over ingest statuses.

    Raises:
        InvalidArgumentError: a filter does not parse.
    """
    flt = core_filters.parse(*filters)
    return lambda status: flt.match(adapt_status(status))
