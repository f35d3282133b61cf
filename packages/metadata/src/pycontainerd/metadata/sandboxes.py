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
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.core import filters, identifiers
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import namespace_required
from pycontainerd.metadata._rows import (
    RecordTable,
    any_value,
    apply_mask,
    dump_map,
    list_matching,
    load_map,
    prefixed,
    update_paths,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterator, Mapping

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


_TABLE = RecordTable(
    "sandboxes",
    (
        "id",
        "runtime_name",
        "runtime_options_type_url",
        "runtime_options_value",
        "spec_type_url",
        "spec_value",
        "labels",
        "sandboxer",
        "created_at",
        "updated_at",
    ),
    owner="sandbox",
)

#: Paths replaced when an update carries no field mask (upstream's order).
_FULL_REPLACE = ("labels", "extensions", "spec", "runtime")


def sandbox_adaptor(sb: Sandbox) -> filters.Adaptor:
    """Filter fields: ``id`` and ``labels.<key>`` (as upstream's adaptor)."""
    return filters.adapt({"id": sb.id or None, "labels": filters.joined_map(sb.labels)})


def _from_row(row: tuple[Any, ...], extensions: Mapping[str, AnyValue]) -> Sandbox:
    (sid, rt_name, rt_url, rt_value, spec_url, spec_value, labels, sandboxer, created, updated) = (
        row
    )
    return Sandbox(
        id=sid,
        runtime_name=rt_name,
        runtime_options=any_value(rt_url, rt_value),
        spec=any_value(spec_url, spec_value),
        labels=load_map(labels),
        extensions=dict(extensions),
        sandboxer=sandboxer,
        created_at_ns=created,
        updated_at_ns=updated,
    )


def _read(tx: Tx, namespace: str, sid: str) -> Sandbox:
    # upstream: `bucket "<id>" not found` (bolt's bucket per sandbox)
    return _TABLE.read(tx, namespace, sid, _from_row, f"bucket {go_quote(sid)} not found")


def _all(tx: Tx, namespace: str) -> Iterator[Sandbox]:
    exts = _TABLE.extensions(tx, namespace)
    return (_from_row(row, exts.get(row[0], {})) for row in _TABLE.all(tx, namespace))


def _values(sb: Sandbox) -> tuple[Any, ...]:
    """The row of ``sb``, in the columns' order."""
    opts = sb.runtime_options
    return (
        sb.id,
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


def _validate(sb: Sandbox) -> None:
    with prefixed("invalid sandbox ID"):
        identifiers.validate(sb.id)
    validate_labels(sb.labels, "sandbox.Labels")


#: How each path of a field mask other than labels and extensions sets a field.
_MASK_FIELDS: Final[Mapping[str, Callable[[Sandbox, Sandbox], Sandbox]]] = {
    "runtime": lambda out, req: dataclasses.replace(
        out, runtime_name=req.runtime_name, runtime_options=req.runtime_options
    ),
    "spec": lambda out, req: dataclasses.replace(out, spec=req.spec),
}


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
        now = now_ns()
        sandbox = dataclasses.replace(
            sandbox,
            labels={k: v for k, v in sandbox.labels.items() if v != ""},
            created_at_ns=now,
            updated_at_ns=now,
        )
        with prefixed("failed to validate sandbox"):
            _validate(sandbox)

        exists = f"write error: sandbox bucket {go_quote(sandbox.id)} already exists"
        return await _TABLE.create(self._db, sandbox, _values, exists)

    async def update(self, sandbox: Sandbox, *paths: str) -> Sandbox:
        """Update ``sandbox.id`` from ``sandbox``; ``paths`` is the field mask.

        Raises:
            InvalidArgumentError: an unknown path or a changed runtime name without a mask.
            NotFoundError: the sandbox does not exist.
        """
        ns = namespace_required()

        def run(tx: Tx) -> Sandbox:
            current = _read(tx, ns, sandbox.id)
            immutable = ((current.runtime_name, sandbox.runtime_name, "sandbox.Runtime.Name"),)
            mask = update_paths(paths, _FULL_REPLACE, immutable)
            updated = apply_mask(current, sandbox, mask, _MASK_FIELDS, "sandbox ")
            _validate(updated)
            updated = dataclasses.replace(updated, updated_at_ns=now_ns())
            _TABLE.write(tx, ns, _values(updated), updated.extensions, insert=False)
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
        return await list_matching(self._db, fs, sandbox_adaptor, _all)

    async def delete(self, sid: str) -> None:
        """Delete the sandbox ``sid`` (its containers keep their ``sandbox_id``, as upstream).

        Raises:
            NotFoundError: ``failed to delete sandbox "<id>"``.
        """
        await _TABLE.delete(
            self._db, namespace_required(), sid, f"failed to delete sandbox {go_quote(sid)}"
        )
