"""Unpacking an image's layers into a snapshotter through the daemon (containerd's unpacker).

For each layer ``i`` the chain ID of ``diff_ids[0..i]`` names the committed
snapshot (OCI: ``ChainID(L0) = DiffID(L0)``, ``ChainID(Ln) =
sha256(ChainID(Ln-1) + " " + DiffID(Ln))``). A chain already committed is
skipped. Otherwise an active snapshot is prepared on the previous chain
(key ``extract-<nanoseconds>-<random> <chainID>``), the layer blob is
applied into its mounts by the Diff service, the uncompressed digest it
reports is checked against the config's diff ID, and the snapshot is
committed as the chain ID. The layer blob then gets
``containerd.io/uncompressed=<diffID>`` (written while the next layer
unpacks; all are written before the unpack returns) and, at the end, the
config blob ``containerd.io/gc.ref.snapshot.<snapshotter>=<top chainID>`` so
the garbage collector keeps the snapshots while the image exists.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Protocol

from pycontainerd.core import content
from pycontainerd.core.closing import finish_shielded
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.jsonload import load_json
from pycontainerd.core.types import Descriptor
from pycontainerd.remotes import mediatypes as mt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from pycontainerd.core.snapshots import Snapshotter
    from pycontainerd.core.types import Mount

log = logging.getLogger(__name__)

SNAPSHOT_REF_LABEL = "containerd.io/snapshot.ref"


class Applier(Protocol):
    """What unpacking needs of a differ (the Diff service's ``Apply``)."""

    async def apply(self, desc: Descriptor, mounts: Sequence[Mount]) -> Descriptor:
        """Apply the layer ``desc`` onto ``mounts``; return the uncompressed descriptor."""
        ...


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of every prefix of ``diff_ids``."""
    out: list[str] = []
    for d in diff_ids:
        if not out:
            out.append(d)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def _extract_key(chain: str) -> str:
    nanos = time.time_ns() % 1_000_000_000
    suffix = base64.urlsafe_b64encode(os.urandom(3)).decode()
    return f"extract-{nanos}-{suffix} {chain}"


async def read_json(store: content.Provider, desc: Descriptor) -> dict[str, object]:
    """A small JSON blob (manifest, index or config) from the content store.

    Raises:
        OutOfRangeError: over ``MAX_MANIFEST_SIZE``.
        InvalidArgumentError: not a JSON object.
    """
    if desc.size > mt.MAX_MANIFEST_SIZE:
        from pycontainerd.core.errdefs import OutOfRangeError

        msg = f"{desc.digest}: size {desc.size} exceeds the limit of {mt.MAX_MANIFEST_SIZE} bytes"
        raise OutOfRangeError(msg)
    return parse_json(await content.read_blob(store, desc.digest), desc)


def parse_json(data: bytes, desc: Descriptor) -> dict[str, object]:
    """``data`` (the blob ``desc``) as a JSON object.

    Raises:
        InvalidArgumentError: not a JSON object.
    """
    try:
        return load_json(data, dict)
    except ValueError as exc:
        msg = f"{desc.digest} ({desc.media_type}): {exc}"
        raise InvalidArgumentError(msg) from None


def descriptor_from_json(raw: object, where: str) -> Descriptor:
    """An OCI descriptor from its JSON form.

    Raises:
        InvalidArgumentError: a required field is missing or of the wrong type.
    """
    from pycontainerd.core import digests
    from pycontainerd.core.platforms import Platform

    if not isinstance(raw, dict):
        msg = f"{where}: descriptor is not an object"
        raise InvalidArgumentError(msg)
    media_type, dgst, size = raw.get("mediaType", ""), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(dgst, str) or not isinstance(size, int):
        msg = f"{where}: descriptor needs mediaType, digest and size"
        raise InvalidArgumentError(msg)
    digests.parse(dgst)
    platform = None
    plat = raw.get("platform")
    if isinstance(plat, dict):
        platform = Platform(
            os=str(plat.get("os", "")),
            architecture=str(plat.get("architecture", "")),
            variant=str(plat.get("variant", "")),
            os_version=str(plat.get("os.version", "")),
        )
    annotations = raw.get("annotations") or {}
    urls = raw.get("urls") or []
    return Descriptor(
        media_type=media_type,
        digest=dgst,
        size=size,
        urls=tuple(str(u) for u in urls) if isinstance(urls, list) else (),
        annotations={str(k): str(v) for k, v in annotations.items()}
        if isinstance(annotations, dict)
        else {},
        platform=platform,
    )


async def manifest_parts(
    store: content.Provider, manifest: Descriptor
) -> tuple[Descriptor, list[Descriptor]]:
    """The config and layer descriptors of an image manifest."""
    doc = await read_json(store, manifest)
    config = descriptor_from_json(doc.get("config"), manifest.digest)
    layers_raw = doc.get("layers") or []
    if not isinstance(layers_raw, list):
        msg = f"{manifest.digest}: layers is not a list"
        raise InvalidArgumentError(msg)
    return config, [descriptor_from_json(x, manifest.digest) for x in layers_raw]


async def unpack(
    store: content.Store,
    snapshotter: Snapshotter,
    applier: Applier,
    manifest: Descriptor,
    *,
    snapshotter_name: str,
    progress: Callable[[str, str], None] | None = None,
) -> str:
    """Unpack the image ``manifest`` into ``snapshotter``; return the top chain ID.

    Raises:
        UnimplementedError: a layer of an unsupported media type.
        FailedPreconditionError: layers and diff IDs disagree, or a layer
            unpacks to a different digest than the config says.
    """
    config, layers = await manifest_parts(store, manifest)
    return await unpack_layers(
        store,
        snapshotter,
        applier,
        config,
        layers,
        snapshotter_name=snapshotter_name,
        progress=progress,
    )


async def unpack_layers(
    store: content.Store,
    snapshotter: Snapshotter,
    applier: Applier,
    config: Descriptor,
    layers: Sequence[Descriptor],
    *,
    snapshotter_name: str,
    progress: Callable[[str, str], None] | None = None,
    ready: Callable[[Descriptor], Awaitable[None]] | None = None,
) -> str:
    """Unpack ``layers`` (bottom first) as the image ``config`` describes; return the top chain ID.

    With ``ready``, each blob (the config first, then every layer just before
    it is applied) is awaited through it: a pull that is still fetching
    passes a wait for that blob to be in the content store, so lower layers
    are applied while upper ones download.

    Raises:
        UnimplementedError: a layer of an unsupported media type.
        FailedPreconditionError: layers and diff IDs disagree, or a layer
            unpacks to a different digest than the config says.
    """
    if ready is not None:
        await ready(config)
    cfg = await read_json(store, config)
    rootfs = cfg.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        msg = f"config {config.digest}: rootfs.diff_ids missing"
        raise InvalidArgumentError(msg)
    if len(diff_ids) != len(layers):
        msg = f"mismatched image rootfs and manifest layers: {len(diff_ids)} != {len(layers)}"
        raise FailedPreconditionError(msg)
    for layer in layers:
        mt.compression(layer.media_type)  # UnimplementedError for what cannot be applied
    chains = chain_ids([str(d) for d in diff_ids])
    steps = list(zip(layers, [str(d) for d in diff_ids], chains, strict=True))
    await _apply_chain(store, snapshotter, applier, steps, progress=progress, ready=ready)
    if chains:
        info = content.Info(
            digest=config.digest, labels={mt.GC_SNAPSHOT_PREFIX + snapshotter_name: chains[-1]}
        )
        await store.update(info, f"labels.{mt.GC_SNAPSHOT_PREFIX}{snapshotter_name}")
    return chains[-1] if chains else ""


async def _apply_chain(
    store: content.Store,
    snapshotter: Snapshotter,
    applier: Applier,
    steps: Sequence[tuple[Descriptor, str, str]],
    *,
    progress: Callable[[str, str], None] | None,
    ready: Callable[[Descriptor], Awaitable[None]] | None,
) -> None:
    """Apply every ``(layer, diff ID, chain ID)`` on the previous one; label it with its diff ID.

    A layer's ``containerd.io/uncompressed`` label is written while the next
    layer is unpacked (at most one such write in flight), and all of them are
    done when this returns or raises; a failed label write fails the unpack.
    """
    parent = ""
    labelling: asyncio.Future[None] | None = None
    try:
        for layer, diff_id, chain in steps:
            if ready is not None:
                await ready(layer)
            if progress:
                progress(layer.digest, "extracting")
            await _apply_layer(
                store,
                snapshotter,
                applier,
                layer=layer,
                diff_id=diff_id,
                chain=chain,
                parent=parent,
            )
            if labelling is not None:
                await labelling
            labelling = asyncio.ensure_future(_label_uncompressed(store, layer, diff_id))
            parent = chain
        if labelling is not None:
            await labelling
    finally:
        if labelling is not None:
            # also when a later layer failed: the label of a committed layer is written,
            # as it was when each label was awaited before the next layer started
            if not labelling.done():
                await asyncio.wait([labelling])
            if not labelling.cancelled():
                labelling.exception()  # seen: a failure behind another one is not "never retrieved"


async def _apply_layer(
    store: content.Store,
    sn: Snapshotter,
    applier: Applier,
    *,
    layer: Descriptor,
    diff_id: str,
    chain: str,
    parent: str,
) -> None:
    try:
        await sn.stat(chain)
    except NotFoundError:
        pass
    else:
        log.debug("layer %s already unpacked as %s", layer.digest, chain)
        return
    key = _extract_key(chain)
    mounts = await sn.prepare(key, parent, labels={SNAPSHOT_REF_LABEL: chain})
    committed = False
    try:
        applied = await applier.apply(layer, mounts)
        if applied.digest != diff_id:
            msg = (
                f"wrong diff id calculated on extraction of {layer.digest}: "
                f"{applied.digest}, expected {diff_id}"
            )
            raise FailedPreconditionError(msg)
        try:
            await sn.commit(chain, key)
        except AlreadyExistsError:
            log.debug("chain %s was committed concurrently", chain)
        else:
            committed = True
    finally:
        if not committed:
            # shielded: a pull cancelled mid-apply (another blob failed) still removes it
            with contextlib.suppress(ContainerdError):
                await finish_shielded(sn.remove(key))


async def _label_uncompressed(store: content.Store, layer: Descriptor, diff_id: str) -> None:
    info = content.Info(digest=layer.digest, labels={mt.UNCOMPRESSED_LABEL: diff_id})
    await store.update(info, f"labels.{mt.UNCOMPRESSED_LABEL}")
