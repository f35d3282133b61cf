"""Sandboxes: metadata records of the sandbox store (containerd 2.x's ``sandbox.Store``).

A sandbox record holds an id, the runtime (name and options), the spec, the
sandboxer (which controller runs it), labels and extensions. Containers name
the sandbox they belong to in their ``sandbox_id``. The record itself starts
nothing: a sandbox controller does.

Behaviour follows containerd 2.1's metadata store: the store sets both
timestamps on create (nanoseconds, as Go's ``time.Now``); the id must be an
identifier; a duplicate id is AlreadyExists with upstream's text
(``write error: sandbox bucket "<id>" already exists``). Updatable paths are
``labels``, ``labels.<key>``, ``extensions``, ``extensions.<name>``,
``runtime`` and ``spec``; with no mask the first four kinds are replaced and
a changed runtime name is refused. Filters: ``id`` and ``labels.<key>``.

For garbage collection a sandbox is a root: its ``containerd.io/gc.ref.*``
labels keep what they name (``gc.py``). Leases do not hold sandboxes and
sandboxes do not block a namespace's deletion, as upstream.

Importing this module must not import grpc.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycontainerd.core import filters, identifiers
from pycontainerd.core.errdefs import AlreadyExistsError, InvalidArgumentError, NotFoundError
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import namespace_required
from pycontainerd.metadata._rows import (
    apply_map_paths,
    dump_map,
    ensure_namespace,
    load_map,
    matcher,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable, Mapping

    from pycontainerd.core.types import AnyValue
    from pycontainerd.metadata.db import MetadataDB, Tx

__all__ = ["Sandbox", "SandboxStore", "sandbox_adaptor"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """A sandbox record.

    Attributes:
        id: unique within a namespace; an identifier.
        runtime_name: the runtime (shim) that serves it, e.g. ``io.containerd.runc.v2``.
        runtime_options: runtime-specific options, opaque here.
        spec: the sandbox's spec (an OCI spec for the shim controller), opaque here.
        labels: mutable metadata; ``containerd.io/gc.ref.*`` labels hold resources.
        extensions: client-defined extra data, keyed by name.
        sandboxer: the controller that runs it (``shim``, or a proxy's name).
        created_at_ns: set by the store on create, ns since the epoch.
        updated_at_ns: set by the store on every write.
    """

    id: str
    runtime_name: str = ""
    runtime_options: AnyValue | None = None
    spec: AnyValue | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    extensions: Mapping[str, AnyValue] = field(default_factory=dict)
    sandboxer: str = ""
    created_at_ns: int = 0
    updated_at_ns: int = 0


_COLUMNS = (
    "id, runtime_name, runtime_options_type_url, runtime_options_value,"
    " spec_type_url, spec_value, labels, sandboxer, created_at, updated_at"
)

#: Paths replaced when an update carries no field mask (upstream's order).
_FULL_REPLACE = ("labels", "extensions", "spec", "runtime")


def sandbox_adaptor(sb: Sandbox) -> filters.Adaptor:
    """Filter fields: ``id`` and ``labels.<key>`` (as upstream's adaptor)."""
    return filters.adapt({"id": sb.id or None, "labels": filters.joined_map(sb.labels)})


def _any(type_url: str | None, value: bytes | None) -> AnyValue | None:
    from pycontainerd.core.types import AnyValue

    if type_url is None:
        return None
    return AnyValue(type_url=type_url, value=bytes(value or b""))


def _from_row(row: tuple[Any, ...], extensions: Mapping[str, AnyValue]) -> Sandbox:
    (sid, rt_name, rt_url, rt_value, spec_url, spec_value, labels, sandboxer, created, updated) = (
        row
    )
    return Sandbox(
        id=sid,
        runtime_name=rt_name,
        runtime_options=_any(rt_url, rt_value),
        spec=_any(spec_url, spec_value),
        labels=load_map(labels),
        extensions=dict(extensions),
        sandboxer=sandboxer,
        created_at_ns=created,
        updated_at_ns=updated,
    )


def _extensions(tx: Tx, namespace: str, sid: str | None) -> dict[str, dict[str, AnyValue]]:
    from pycontainerd.core.types import AnyValue

    query = "SELECT sandbox_id, name, type_url, value FROM sandbox_extensions WHERE namespace = ?"
    args: tuple[str, ...] = (namespace,)
    if sid is not None:
        query += " AND sandbox_id = ?"
        args = (namespace, sid)
    out: dict[str, dict[str, AnyValue]] = {}
    for sandbox_id, name, type_url, value in tx.execute(query, args):
        out.setdefault(sandbox_id, {})[name] = AnyValue(type_url=type_url, value=bytes(value))
    return out


def _read(tx: Tx, namespace: str, sid: str) -> Sandbox:
    row = tx.execute(
        f"SELECT {_COLUMNS} FROM sandboxes WHERE namespace = ? AND id = ?",  # noqa: S608
        (namespace, sid),
    ).fetchone()
    if row is None:
        # upstream: `bucket "<id>" not found` (bolt's bucket per sandbox)
        msg = f"bucket {go_quote(sid)}"
        raise NotFoundError(msg)
    return _from_row(row, _extensions(tx, namespace, sid).get(sid, {}))


def _write(tx: Tx, namespace: str, sb: Sandbox, *, insert: bool) -> None:
    opts = sb.runtime_options
    values = (
        sb.runtime_name,
        opts.type_url if opts else None,
        opts.value if opts else None,
        sb.spec.type_url if sb.spec else None,
        sb.spec.value if sb.spec else None,
        dump_map(sb.labels),
        sb.sandboxer,
        sb.created_at_ns,
        sb.updated_at_ns,
    )
    if insert:
        tx.execute(
            f"INSERT INTO sandboxes (namespace, {_COLUMNS})"  # noqa: S608
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (namespace, sb.id, *values),
        )
    else:
        tx.execute(
            "UPDATE sandboxes SET runtime_name = ?, runtime_options_type_url = ?,"
            " runtime_options_value = ?, spec_type_url = ?, spec_value = ?, labels = ?,"
            " sandboxer = ?, created_at = ?, updated_at = ? WHERE namespace = ? AND id = ?",
            (*values, namespace, sb.id),
        )
        tx.execute(
            "DELETE FROM sandbox_extensions WHERE namespace = ? AND sandbox_id = ?",
            (namespace, sb.id),
        )
    tx.executemany(
        "INSERT INTO sandbox_extensions (namespace, sandbox_id, name, type_url, value)"
        " VALUES (?, ?, ?, ?, ?)",
        [(namespace, sb.id, name, a.type_url, a.value) for name, a in sb.extensions.items()],
    )


def _validate(sb: Sandbox) -> None:
    try:
        identifiers.validate(sb.id)
    except InvalidArgumentError as exc:
        msg = f"invalid sandbox ID: {exc.message}"
        raise InvalidArgumentError(msg) from exc
    validate_labels(sb.labels, "sandbox.Labels")


def _apply_mask(current: Sandbox, req: Sandbox, paths: Iterable[str]) -> Sandbox:
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
        elif path == "extensions":
            extensions = dict(req.extensions)
        elif path == "runtime":
            out = dataclasses.replace(
                out, runtime_name=req.runtime_name, runtime_options=req.runtime_options
            )
        elif path == "spec":
            out = dataclasses.replace(out, spec=req.spec)
        else:
            msg = f"cannot update {go_quote(path)} field on sandbox {go_quote(req.id)}"
            raise InvalidArgumentError(msg)
    labels = {k: v for k, v in labels.items() if v != ""}
    return dataclasses.replace(out, labels=labels, extensions=extensions)


class SandboxStore:
    """Sandboxes of the current namespace (``pycontainerd.core.namespaces``)."""

    def __init__(self, db: MetadataDB) -> None:
        self._db = db

    async def create(self, sandbox: Sandbox) -> Sandbox:
        """Store a new sandbox; both timestamps are set here.

        Raises:
            InvalidArgumentError: ``failed to validate sandbox: invalid sandbox ID: ...``.
            AlreadyExistsError: ``write error: sandbox bucket "<id>" already exists``.
        """
        ns = namespace_required()
        now = now_ns()
        sandbox = dataclasses.replace(
            sandbox,
            labels={k: v for k, v in sandbox.labels.items() if v != ""},
            created_at_ns=now,
            updated_at_ns=now,
        )
        try:
            _validate(sandbox)
        except InvalidArgumentError as exc:
            msg = f"failed to validate sandbox: {exc.message}"
            raise InvalidArgumentError(msg) from exc

        def run(tx: Tx) -> Sandbox:
            ensure_namespace(tx, ns)
            exists = tx.execute(
                "SELECT 1 FROM sandboxes WHERE namespace = ? AND id = ?", (ns, sandbox.id)
            ).fetchone()
            if exists:
                msg = f"write error: sandbox bucket {go_quote(sandbox.id)} already exists"
                raise AlreadyExistsError(msg)
            _write(tx, ns, sandbox, insert=True)
            return sandbox

        return await self._db.aupdate_point(run)

    async def update(self, sandbox: Sandbox, *paths: str) -> Sandbox:
        """Update ``sandbox.id`` from ``sandbox``; ``paths`` is the field mask.

        Raises:
            InvalidArgumentError: an unknown path or a changed runtime name without a mask.
            NotFoundError: the sandbox does not exist.
        """
        ns = namespace_required()

        def run(tx: Tx) -> Sandbox:
            current = _read(tx, ns, sandbox.id)
            mask: Iterable[str] = paths
            if not paths:
                mask = _FULL_REPLACE
                if current.runtime_name != sandbox.runtime_name:
                    msg = "sandbox.Runtime.Name field is immutable"
                    raise InvalidArgumentError(msg)
            updated = _apply_mask(current, sandbox, mask)
            _validate(updated)
            updated = dataclasses.replace(updated, updated_at_ns=now_ns())
            _write(tx, ns, updated, insert=False)
            if updated.labels != current.labels:
                tx.mark_dirty()
            return updated

        return await self._db.aupdate_point(run)

    async def get(self, sid: str) -> Sandbox:
        """The sandbox ``sid``.

        Raises:
            NotFoundError: ``bucket "<id>" not found`` (upstream's text).
        """
        ns = namespace_required()
        return await self._db.aview_point(lambda tx: _read(tx, ns, sid))

    async def list(self, *fs: str) -> builtins.list[Sandbox]:
        """Sandboxes matching any of ``fs`` (all when none), sorted by id.

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        ns = namespace_required()
        match = matcher(fs, sandbox_adaptor)

        def run(tx: Tx) -> builtins.list[Sandbox]:
            exts = _extensions(tx, ns, None)
            rows = tx.execute(
                f"SELECT {_COLUMNS} FROM sandboxes WHERE namespace = ? ORDER BY id",  # noqa: S608
                (ns,),
            )
            found = (_from_row(row, exts.get(row[0], {})) for row in rows)
            return [sb for sb in found if match(sb)]

        return await self._db.aview(run)

    async def delete(self, sid: str) -> None:
        """Delete the sandbox ``sid`` (its containers keep their ``sandbox_id``, as upstream).

        Raises:
            NotFoundError: ``failed to delete sandbox "<id>"``.
        """
        ns = namespace_required()

        def run(tx: Tx) -> None:
            cur = tx.execute("DELETE FROM sandboxes WHERE namespace = ? AND id = ?", (ns, sid))
            if cur.rowcount == 0:
                msg = f"failed to delete sandbox {go_quote(sid)}"
                raise NotFoundError(msg)
            tx.mark_dirty()

        await self._db.aupdate_point(run)
