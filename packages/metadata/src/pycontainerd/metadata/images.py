"""Images: a name in a namespace pointing at a target descriptor, plus labels.

The store validates like containerd (name non-empty, target digest valid,
size > 0, media type set, labels within size), stamps ``created_at`` and
``updated_at`` itself, and applies field masks with containerd's paths:
``labels``, ``labels.<key>``, ``target``, ``annotations``,
``annotations.<key>``. Deleting marks the database dirty for the GC.

Importing this module must not import grpc.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pycontainerd.core import digests, filters
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.images import Image
from pycontainerd.core.namespaces import namespace_required
from pycontainerd.core.types import Descriptor
from pycontainerd.metadata._rows import (
    apply_map_paths,
    dump_map,
    ensure_namespace,
    list_matching,
    load_map,
    ns_to_datetime,
    to_ns,
    validate_labels,
)
from pycontainerd.metadata.db import now_ns

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterator

    from pycontainerd.metadata.db import MetadataDB, Tx

_COLUMNS = "name, media_type, digest, size, annotations, labels, created_at, updated_at"


def _from_row(row: sqlite3.Row | tuple[object, ...]) -> Image:
    name, media_type, digest, size, annotations, labels, created, updated = row
    return Image(
        name=str(name),
        labels=load_map(str(labels)),
        target=Descriptor(
            media_type=str(media_type),
            digest=str(digest),
            size=int(str(size)),
            annotations=load_map(str(annotations)),
        ),
        created_at=ns_to_datetime(int(str(created))),
        updated_at=ns_to_datetime(int(str(updated))),
    )


def image_adaptor(image: Image) -> filters.Adaptor:
    """Filter fields: ``name``, ``target.digest``, ``target.mediatype``, ``labels.<key>``,
    ``annotations.<key>`` (an empty string counts as absent, as upstream).
    """  # noqa: D205
    return filters.adapt(
        {
            "name": image.name or None,
            "target": {
                "digest": image.target.digest or None,
                "mediatype": image.target.media_type or None,
            },
            "labels": filters.joined_map(image.labels),
            "annotations": filters.joined_map(image.target.annotations),
        }
    )


def validate_image(image: Image) -> None:
    """Containerd's checks on an image record.

    Raises:
        InvalidArgumentError: with containerd's messages.
    """
    if not image.name:
        msg = "image name must not be empty"
        raise InvalidArgumentError(msg)
    validate_labels(image.labels, "image.Labels")
    target = image.target
    try:
        digests.parse(target.digest)
    except InvalidArgumentError as exc:
        reason = exc.message.rsplit(": ", 1)[-1]  # go-digest's own text, as upstream shows it
        msg = f"Target.Digest {go_quote(target.digest)} invalid: {reason}"
        raise InvalidArgumentError(msg) from exc
    if target.size <= 0:
        msg = "Target.Size must be greater than zero"
        raise InvalidArgumentError(msg)
    if not target.media_type:
        msg = "Target.MediaType must be set"
        raise InvalidArgumentError(msg)


def _not_found(name: str) -> NotFoundError:
    return NotFoundError(f"image {go_quote(name)}")


def _get(tx: Tx, namespace: str, name: str) -> Image:
    row = tx.execute(
        f"SELECT {_COLUMNS} FROM images WHERE namespace = ? AND name = ?",  # noqa: S608
        (namespace, name),
    ).fetchone()
    if row is None:
        raise _not_found(name)
    return _from_row(row)


def _all(tx: Tx, namespace: str) -> Iterator[Image]:
    rows = tx.execute(
        f"SELECT {_COLUMNS} FROM images WHERE namespace = ? ORDER BY name",  # noqa: S608
        (namespace,),
    )
    return map(_from_row, rows)


def _write(tx: Tx, namespace: str, image: Image) -> None:
    t = image.target
    tx.execute(
        f"INSERT OR REPLACE INTO images (namespace, {_COLUMNS})"  # noqa: S608
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            namespace,
            image.name,
            t.media_type,
            t.digest,
            t.size,
            dump_map(t.annotations),
            dump_map(image.labels),
            to_ns(image.created_at),
            to_ns(image.updated_at),
        ),
    )


def _clean(image: Image) -> Image:
    """Drop empty label/annotation values, which containerd never stores."""
    return dataclasses.replace(
        image,
        labels={k: v for k, v in image.labels.items() if v != ""},
        target=dataclasses.replace(
            image.target,
            annotations={k: v for k, v in image.target.annotations.items() if v != ""},
        ),
    )


class ImageStore:
    """Images of the current namespace (``pycontainerd.core.namespaces``)."""

    def __init__(self, db: MetadataDB) -> None:
        self._db = db

    async def get(self, name: str) -> Image:
        """The image ``name``.

        Raises:
            NotFoundError: ``image "<name>": not found``.
        """
        ns = namespace_required()
        return await self._db.aview_point(lambda tx: _get(tx, ns, name))

    async def list(self, *fs: str) -> list[Image]:
        """Images matching any of ``filters`` (all when none), sorted by name.

        Raises:
            InvalidArgumentError: a filter does not parse.
        """
        return await list_matching(self._db, fs, image_adaptor, _all)

    async def create(self, image: Image) -> Image:
        """Store a new image; timestamps are set here.

        Raises:
            InvalidArgumentError: the record is invalid.
            AlreadyExistsError: ``image "<name>": already exists``.
        """
        ns = namespace_required()
        image = _clean(image)
        validate_image(image)

        def run(tx: Tx) -> Image:
            ensure_namespace(tx, ns)
            exists = tx.execute(
                "SELECT 1 FROM images WHERE namespace = ? AND name = ?", (ns, image.name)
            ).fetchone()
            if exists:
                msg = f"image {go_quote(image.name)}"
                raise AlreadyExistsError(msg)
            now = now_ns()
            stamp = ns_to_datetime(now)
            created = dataclasses.replace(image, created_at=stamp, updated_at=stamp)
            _write(tx, ns, created)
            return created

        return await self._db.aupdate_point(run)

    async def update(self, image: Image, *paths: str) -> Image:
        """Update ``image.name`` from ``image``; ``paths`` is the field mask.

        Without paths the labels and target are replaced. ``created_at`` is
        kept, ``updated_at`` is set now.

        Raises:
            InvalidArgumentError: an unknown path or an invalid result.
            NotFoundError: the image does not exist.
        """
        ns = namespace_required()
        if not image.name:
            msg = "image name is required for update"
            raise InvalidArgumentError(msg)

        def run(tx: Tx) -> Image:
            current = _get(tx, ns, image.name)
            if not paths:
                updated = image
            else:
                labels = dict(current.labels)
                target = current.target
                for path in paths:
                    if path.startswith("labels."):
                        labels = apply_map_paths(
                            labels, image.labels, [path.removeprefix("labels.")]
                        )
                    elif path.startswith("annotations."):
                        target = dataclasses.replace(
                            target,
                            annotations=apply_map_paths(
                                target.annotations,
                                image.target.annotations,
                                [path.removeprefix("annotations.")],
                            ),
                        )
                    elif path == "labels":
                        labels = dict(image.labels)
                    elif path == "target":
                        target = image.target
                    elif path == "annotations":
                        target = dataclasses.replace(
                            target, annotations=dict(image.target.annotations)
                        )
                    else:
                        msg = (
                            f"cannot update {go_quote(path)} field on image {go_quote(image.name)}"
                        )
                        raise InvalidArgumentError(msg)
                updated = dataclasses.replace(current, labels=labels, target=target)
            updated = _clean(
                dataclasses.replace(
                    updated, created_at=current.created_at, updated_at=ns_to_datetime(now_ns())
                )
            )
            validate_image(updated)
            _write(tx, ns, updated)
            if updated.target.digest != current.target.digest:
                tx.mark_dirty()  # the old target may now be unreferenced
            return updated

        return await self._db.aupdate_point(run)

    async def delete(self, name: str, *, sync: bool = False, target: str = "") -> None:
        """Delete the image ``name``.

        Args:
            name: the image.
            sync: wait for a garbage collection afterwards
                (``MetadataDB.wait_for_gc``).
            target: if set, delete only while the image still points at this
                digest (containerd 2.0's ``DeleteImageRequest.target``).

        Raises:
            NotFoundError: ``image "<name>": not found``.
            FailedPreconditionError: ``target`` no longer matches.
        """
        ns = namespace_required()

        def run(tx: Tx) -> None:
            current = _get(tx, ns, name)
            if target and current.target.digest != target:
                msg = f"image {go_quote(name)} target {current.target.digest} is not {target}"
                raise FailedPreconditionError(msg)
            tx.execute("DELETE FROM images WHERE namespace = ? AND name = ?", (ns, name))
            tx.mark_dirty()

        await self._db.aupdate_point(run)
        if sync:
            await self._db.wait_for_gc()
