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
from pycontainerd.core.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import namespace_required
from pycontainerd.core.types import AnyValue
from pycontainerd.metadata._rows import (
    apply_map_paths,
    dump_map,
    ensure_namespace,
    load_map,
    matcher,
    ns_to_datetime,
    to_ns,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterable, Mapping

    from pycontainerd.metadata.db import MetadataDB, Tx

T = TypeVar("T")

_COLUMNS = (
    "id, labels, image, runtime_name, runtime_options_type_url, runtime_options_value,"
    " spec_type_url, spec_value, snapshotter, snapshot_key, sandbox_id, created_at, updated_at"
)

ROW_COLUMNS: Final = tuple(c.strip() for c in _COLUMNS.split(","))
"""The columns of a row :meth:`ContainerStore.list_rows` hands its encoder, in order."""

_NO_EXTENSIONS: Final[Mapping[str, AnyValue]] = {}

#: Paths replaced when an update carries no field mask.
_FULL_REPLACE = ("labels", "spec", "extensions", "image", "snapshotkey")


def _any(type_url: str | None, value: bytes | None) -> AnyValue | None:
    if type_url is None:
        return None
    return AnyValue(type_url=type_url, value=bytes(value or b""))


def _from_row(row: tuple[Any, ...], extensions: Mapping[str, AnyValue]) -> Container:
    (cid, labels, image, rt_name, rt_url, rt_value, spec_url, spec_value) = row[:8]
    (snapshotter, snapshot_key, sandbox_id, created, updated) = row[8:]
    return Container(
        id=cid,
        labels=load_map(labels),
        image=image,
        runtime=RuntimeInfo(name=rt_name, options=_any(rt_url, rt_value)),
        spec=_any(spec_url, spec_value),
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
    try:
        identifiers.validate(c.id)
    except InvalidArgumentError as exc:
        msg = f"container.ID: {exc.message}"
        raise InvalidArgumentError(msg) from exc
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


def _extensions(
    tx: Tx, namespace: str, ids: Iterable[str] | None
) -> dict[str, dict[str, AnyValue]]:
    """Extensions by container id; ``ids=None`` reads the whole namespace at once."""
    out: dict[str, dict[str, AnyValue]] = {}
    if ids is None:
        rows = tx.execute(
            "SELECT container_id, name, type_url, value FROM container_extensions"
            " WHERE namespace = ?",
            (namespace,),
        )
    else:
        (cid,) = ids
        rows = tx.execute(
            "SELECT container_id, name, type_url, value FROM container_extensions"
            " WHERE namespace = ? AND container_id = ?",
            (namespace, cid),
        )
    for container_id, name, type_url, value in rows:
        out.setdefault(container_id, {})[name] = AnyValue(type_url=type_url, value=bytes(value))
    return out


def _get(tx: Tx, namespace: str, cid: str) -> Container:
    row = tx.execute(
        f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? AND id = ?",  # noqa: S608
        (namespace, cid),
    ).fetchone()
    if row is None:
        msg = f"container {go_quote(cid)} in namespace {go_quote(namespace)}"
        raise NotFoundError(msg)
    return _from_row(row, _extensions(tx, namespace, [cid]).get(cid, {}))


def _write(tx: Tx, namespace: str, c: Container, *, insert: bool) -> None:
    rt_opts = c.runtime.options
    values = (
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
    if insert:
        tx.execute(
            f"INSERT INTO containers (namespace, {_COLUMNS})"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (namespace, c.id, *values),
        )
    else:
        tx.execute(
            "UPDATE containers SET labels = ?, image = ?, runtime_name = ?,"
            " runtime_options_type_url = ?, runtime_options_value = ?, spec_type_url = ?,"
            " spec_value = ?, snapshotter = ?, snapshot_key = ?, sandbox_id = ?,"
            " created_at = ?, updated_at = ? WHERE namespace = ? AND id = ?",
            (*values, namespace, c.id),
        )
        tx.execute(
            "DELETE FROM container_extensions WHERE namespace = ? AND container_id = ?",
            (namespace, c.id),
        )
    tx.executemany(
        "INSERT INTO container_extensions (namespace, container_id, name, type_url, value)"
        " VALUES (?, ?, ?, ?, ?)",
        [(namespace, c.id, name, a.type_url, a.value) for name, a in c.extensions.items()],
    )


def _apply_mask(current: Container, req: Container, paths: Iterable[str]) -> Container:
    labels = dict(current.labels)
    extensions = dict(current.extensions)
    out = current
    for path in paths:
        if path.startswith("labels."):
            labels = apply_map_paths(labels, req.labels, [path.removeprefix("labels.")])
        elif path.startswith("extensions."):
            name = path.removeprefix("extensions.")
            if name in req.extensions:
                extensions[name] = req.extensions[name]
            else:
                extensions.pop(name, None)
        elif path == "labels":
            labels = dict(req.labels)
        elif path == "spec":
            out = dataclasses.replace(out, spec=req.spec)
        elif path == "extensions":
            extensions = dict(req.extensions)
        elif path == "image":
            out = dataclasses.replace(out, image=req.image)
        elif path == "snapshotkey":
            out = dataclasses.replace(out, snapshot_key=req.snapshot_key)
        else:
            msg = f"cannot update {go_quote(path)} field on {go_quote(req.id)}"
            raise InvalidArgumentError(msg)
    labels = {k: v for k, v in labels.items() if v != ""}
    return dataclasses.replace(out, labels=labels, extensions=extensions)


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
        ns = namespace_required()
        match = matcher(fs, container_adaptor)

        def run(tx: Tx) -> list[Container]:
            exts = _extensions(tx, ns, None)
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? ORDER BY id",  # noqa: S608
                (ns,),
            )
            out = (_from_row(row, exts.get(row[0], {})) for row in rows)
            return [c for c in out if match(c)]

        return await self._db.aview(run)

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
            exts = _extensions(tx, ns, None)
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM containers WHERE namespace = ? ORDER BY id",  # noqa: S608
                (ns,),
            )
            return [encode(row, exts.get(row[0], _NO_EXTENSIONS)) for row in rows]

        return await self._db.aview(run)

    async def create(self, container: Container) -> Container:
        """Store a new container; timestamps are set here.

        Raises:
            InvalidArgumentError: ``create container failed validation: ...``.
            AlreadyExistsError: ``container "<id>": already exists``.
        """
        ns = namespace_required()
        container = dataclasses.replace(
            container, labels={k: v for k, v in container.labels.items() if v != ""}
        )
        try:
            validate_container(container)
        except InvalidArgumentError as exc:
            msg = f"create container failed validation: {exc.message}"
            raise InvalidArgumentError(msg) from exc

        def run(tx: Tx) -> Container:
            ensure_namespace(tx, ns)
            exists = tx.execute(
                "SELECT 1 FROM containers WHERE namespace = ? AND id = ?", (ns, container.id)
            ).fetchone()
            if exists:
                msg = f"container {go_quote(container.id)}"
                raise AlreadyExistsError(msg)
            now = now_ns()
            stamp = ns_to_datetime(now)
            created = dataclasses.replace(container, created_at=stamp, updated_at=stamp)
            _write(tx, ns, created, insert=True)
            return created

        return await self._db.aupdate_point(run)

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
            mask: Iterable[str] = paths
            if not paths:
                mask = _FULL_REPLACE
                if current.snapshotter != container.snapshotter:
                    msg = "container.Snapshotter field is immutable"
                    raise InvalidArgumentError(msg)
                if current.runtime.name != container.runtime.name:
                    msg = "container.Runtime.Name field is immutable"
                    raise InvalidArgumentError(msg)
            updated = _apply_mask(current, container, mask)
            try:
                validate_container(updated)
            except InvalidArgumentError as exc:
                msg = f"update failed validation: {exc.message}"
                raise InvalidArgumentError(msg) from exc
            updated = dataclasses.replace(
                updated, created_at=current.created_at, updated_at=ns_to_datetime(now_ns())
            )
            _write(tx, ns, updated, insert=False)
            if (updated.snapshot_key, updated.image) != (current.snapshot_key, current.image):
                tx.mark_dirty()
            return updated

        return await self._db.aupdate_point(run)

    async def delete(self, cid: str) -> None:
        """Delete the container ``cid``.

        Raises:
            NotFoundError: ``container "<id>": not found``.
        """
        ns = namespace_required()

        def run(tx: Tx) -> None:
            cur = tx.execute("DELETE FROM containers WHERE namespace = ? AND id = ?", (ns, cid))
            if cur.rowcount == 0:
                msg = f"container {cid}"  # upstream formats this one with %v
                raise NotFoundError(msg)
            tx.mark_dirty()

        await self._db.aupdate_point(run)
