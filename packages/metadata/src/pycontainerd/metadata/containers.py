"""Containers: metadata records (spec, runtime, snapshot, labels, extensions).

Validation and field masks follow containerd: the id must be an identifier,
the runtime name and the spec must be set, a snapshot key needs a
snapshotter, extension names must not be empty. Updatable paths are
``labels``, ``labels.<key>``, ``spec``, ``extensions``, ``extensions.<name>``,
``image`` and ``snapshotkey``; with no mask those five are replaced, and a
changed snapshotter or runtime name is refused (they are immutable).

Listing reads all rows of a namespace with two queries (containers, then
their extensions), so ten thousand records list quickly.

Importing this module must not import grpc.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pycontainerd.core import filters, identifiers
from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import namespace_required
from pycontainerd.metadata._rows import (
    RecordTable,
    any_value,
    apply_mask,
    dump_map,
    load_map,
    matcher,
    ns_to_datetime,
    prefixed,
    to_ns,
    update_paths,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Mapping

    from pycontainerd.core.types import AnyValue
    from pycontainerd.metadata.db import MetadataDB, Tx

T = TypeVar("T")

_TABLE: Final = RecordTable(
    "containers",
    (
        "id",
        "labels",
        "image",
        "runtime_name",
        "runtime_options_type_url",
        "runtime_options_value",
        "spec_type_url",
        "spec_value",
        "snapshotter",
        "snapshot_key",
        "sandbox_id",
        "created_at",
        "updated_at",
    ),
    owner="container",
)

ROW_COLUMNS: Final = _TABLE.columns
"""The columns of a row :meth:`ContainerStore.list_rows` hands its encoder, in order."""

_NO_EXTENSIONS: Final[Mapping[str, AnyValue]] = {}

#: Paths replaced when an update carries no field mask.
_FULL_REPLACE = ("labels", "spec", "extensions", "image", "snapshotkey")


def _from_row(row: tuple[Any, ...], extensions: Mapping[str, AnyValue]) -> Container:
    (cid, labels, image, rt_name, rt_url, rt_value, spec_url, spec_value) = row[:8]
    (snapshotter, snapshot_key, sandbox_id, created, updated) = row[8:]
    return Container(
        id=cid,
        labels=load_map(labels),
        image=image,
        runtime=RuntimeInfo(name=rt_name, options=any_value(rt_url, rt_value)),
        spec=any_value(spec_url, spec_value),
        snapshotter=snapshotter,
        snapshot_key=snapshot_key,
        sandbox_id=sandbox_id,
        extensions=dict(extensions),
        created_at=ns_to_datetime(created),
        updated_at=ns_to_datetime(updated),
    )


def container_adaptor(c: Container) -> filters.Adaptor:
    """Filter fields: ``id``, ``image``, ``runtime.name``, ``snapshotter``, ``labels.<key>``."""
    return filters.adapt(
        {
            "id": c.id or None,
            "image": c.image or None,
            "runtime": {"name": c.runtime.name or None},
            "snapshotter": c.snapshotter or None,
            "labels": filters.joined_map(c.labels),
        }
    )


def validate_container(c: Container) -> None:
    """Containerd's checks on a container record.

    Raises:
        InvalidArgumentError: with containerd's messages.
    """
    with prefixed("container.ID"):
        identifiers.validate(c.id)
    if any(not name for name in c.extensions):
        msg = "container.Extension keys must not be zero-length"
        raise InvalidArgumentError(msg)
    validate_labels(c.labels, "containers.Labels")
    if not c.runtime.name:
        msg = "container.Runtime.Name must be set"
        raise InvalidArgumentError(msg)
    if c.spec is None:
        msg = "container.Spec must be set"
        raise InvalidArgumentError(msg)
    if c.snapshot_key and not c.snapshotter:
        msg = "container.Snapshotter must be set if container.SnapshotKey is set"
        raise InvalidArgumentError(msg)


def _get(tx: Tx, namespace: str, cid: str) -> Container:
    missing = f"container {go_quote(cid)} in namespace {go_quote(namespace)}"
    return _TABLE.read(tx, namespace, cid, _from_row, missing)


def _values(c: Container) -> tuple[Any, ...]:
    """The row of ``c``, in the columns' order."""
    rt_opts = c.runtime.options
    return (
        c.id,
        dump_map(c.labels),
        c.image,
        c.runtime.name,
        rt_opts.type_url if rt_opts else None,
        rt_opts.value if rt_opts else None,
        c.spec.type_url if c.spec else None,
        c.spec.value if c.spec else None,
        c.snapshotter,
        c.snapshot_key,
        c.sandbox_id,
        to_ns(c.created_at),
        to_ns(c.updated_at),
    )


#: How each path of a field mask other than labels and extensions sets a field.
_MASK_FIELDS: Final[Mapping[str, Callable[[Container, Container], Container]]] = {
    "spec": lambda out, req: dataclasses.replace(out, spec=req.spec),
    "image": lambda out, req: dataclasses.replace(out, image=req.image),
    "snapshotkey": lambda out, req: dataclasses.replace(out, snapshot_key=req.snapshot_key),
}


class ContainerStore:
    """Containers of the current namespace (``pycontainerd.core.namespaces``)."""

    def __init__(self, db: MetadataDB) -> None:
        self._db = db

    async def get(self, cid: str) -> Container:
        """The container ``cid``.

        Raises:
            NotFoundError: ``container "<id>" in namespace "<ns>": not found``.
        """
        ns = namespace_required()
        return await self._db.aview_point(lambda tx: _get(tx, ns, cid))

    async def list(self, *fs: str) -> list[Container]:
        """Containers matching any of ``fs`` (all when none), sorted by id.

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        match = matcher(fs, container_adaptor)
        return [c for c in await self.list_rows(_from_row) if match(c)]

    async def list_rows(
        self, encode: Callable[[tuple[Any, ...], Mapping[str, AnyValue]], T]
    ) -> builtins.list[T]:
        """Every container of the namespace, sorted by id, as ``encode(row, extensions)``.

        For the unfiltered listing on the wire (``ctr containers ls``): the
        service turns each stored row straight into its message, without the
        :class:`Container` in between. ``row`` holds the columns of
        :data:`ROW_COLUMNS`, times in nanoseconds since the epoch.
        """
        ns = namespace_required()

        def run(tx: Tx) -> builtins.list[T]:
            exts = _TABLE.extensions(tx, ns)
            return [encode(row, exts.get(row[0], _NO_EXTENSIONS)) for row in _TABLE.all(tx, ns)]

        return await self._db.aview(run)

    async def create(self, container: Container) -> Container:
        """Store a new container; timestamps are set here.

        Raises:
            InvalidArgumentError: ``create container failed validation: ...``.
            AlreadyExistsError: ``container "<id>": already exists``.
        """
        container = dataclasses.replace(
            container, labels={k: v for k, v in container.labels.items() if v != ""}
        )
        with prefixed("create container failed validation"):
            validate_container(container)

        def stamp(c: Container) -> Container:
            now = ns_to_datetime(now_ns())
            return dataclasses.replace(c, created_at=now, updated_at=now)

        exists = f"container {go_quote(container.id)}"
        return await _TABLE.create(self._db, container, _values, exists, stamp)

    async def update(self, container: Container, *paths: str) -> Container:
        """Update ``container.id`` from ``container``; ``paths`` is the field mask.

        Raises:
            InvalidArgumentError: no id, an unknown path, a change to an immutable
                field, or an invalid result (``update failed validation: ...``).
            NotFoundError: the container does not exist.
        """
        ns = namespace_required()
        if not container.id:
            msg = "must specify a container id"
            raise InvalidArgumentError(msg)

        def run(tx: Tx) -> Container:
            current = _get(tx, ns, container.id)
            immutable = (
                (current.snapshotter, container.snapshotter, "container.Snapshotter"),
                (current.runtime.name, container.runtime.name, "container.Runtime.Name"),
            )
            mask = update_paths(paths, _FULL_REPLACE, immutable)
            updated = apply_mask(current, container, mask, _MASK_FIELDS, "")
            with prefixed("update failed validation"):
                validate_container(updated)
            updated = dataclasses.replace(
                updated, created_at=current.created_at, updated_at=ns_to_datetime(now_ns())
            )
            _TABLE.write(tx, ns, _values(updated), updated.extensions, insert=False)
            if (updated.snapshot_key, updated.image) != (current.snapshot_key, current.image):
                tx.mark_dirty()
            return updated

        return await self._db.aupdate_point(run)

    async def delete(self, cid: str) -> None:
        """Delete the container ``cid``.

        Raises:
            NotFoundError: ``container "<id>": not found``.
        """
        # upstream formats this one with %v
        await _TABLE.delete(self._db, namespace_required(), cid, f"container {cid}")
