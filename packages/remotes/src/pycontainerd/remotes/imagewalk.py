"""Walking an image's content graph: children, platforms, size, completeness.

What ``ctr images ls`` and ``ctr images check`` need (containerd's
``images.Children``, ``images.Platforms``, ``Image.Size``, ``images.Check``),
over any content ``Provider``. Pure client-side logic, no grpc here.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pycontainerd.core import content, platforms
from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.core.platforms import Platform
from pycontainerd.core.types import Descriptor

if TYPE_CHECKING:
    from pycontainerd.core.content import Manager, Provider

INDEX_TYPES = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)
MANIFEST_TYPES = frozenset(
    {
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    }
)
CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)


def _descriptor(raw: dict[str, object]) -> Descriptor:
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = Platform(
            os=str(plat.get("os", "")),
            architecture=str(plat.get("architecture", "")),
            variant=str(plat.get("variant", "")),
        )
    annotations = raw.get("annotations")
    return Descriptor(
        media_type=str(raw.get("mediaType", "")),
        digest=str(raw.get("digest", "")),
        size=int(raw.get("size", 0)),  # type: ignore[call-overload]
        annotations=dict(annotations) if isinstance(annotations, dict) else {},
        platform=platform,
    )


async def children(provider: Provider, desc: Descriptor) -> list[Descriptor]:
    """The descriptors ``desc`` references (manifests of an index; config and layers)."""
    if desc.media_type not in INDEX_TYPES | MANIFEST_TYPES:
        return []
    doc = json.loads(await content.read_blob(provider, desc.digest))
    if desc.media_type in INDEX_TYPES:
        return [_descriptor(m) for m in doc.get("manifests", [])]
    out = [_descriptor(doc["config"])] if isinstance(doc.get("config"), dict) else []
    return out + [_descriptor(layer) for layer in doc.get("layers", [])]


async def image_platforms(provider: Provider, target: Descriptor) -> list[Platform]:
    """Platforms an image is for: from index entries, else from the config."""
    found: list[Platform] = []
    stack = [target]
    while stack:
        desc = stack.pop(0)
        if desc.platform is not None and desc is not target:
            if "unknown" not in (desc.platform.os, desc.platform.architecture):
                found.append(desc.platform)
            continue
        if desc.media_type in CONFIG_TYPES:
            cfg = json.loads(await content.read_blob(provider, desc.digest))
            found.append(
                platforms.normalize(
                    Platform(
                        os=str(cfg.get("os", "")), architecture=str(cfg.get("architecture", ""))
                    )
                )
            )
            continue
        stack[0:0] = await children(provider, desc)
    return found


def _best_manifests(descs: list[Descriptor], want: Platform) -> list[Descriptor]:
    """Index entries for ``want`` (entries without platform kept), best match first, at most 1."""
    order = platforms.compatible(want)

    def rank(d: Descriptor) -> int:
        if d.platform is None:
            return len(order)
        for i, p in enumerate(order):
            if platforms.matches(p, d.platform):
                return i
        return -1

    kept = [d for d in descs if rank(d) >= 0]
    kept.sort(key=rank)
    return kept[:1]


async def image_size(
    provider: Provider, target: Descriptor, want: Platform | None = None
) -> tuple[int, Exception | None]:
    """Total size of the image's blobs for ``want`` (host by default), and any error met."""
    want = want or platforms.host()
    size = 0
    stack = [target]
    try:
        while stack:
            desc = stack.pop(0)
            size += desc.size
            kids = await children(provider, desc)
            if desc.media_type in INDEX_TYPES:
                kids = _best_manifests(kids, want)
            stack[0:0] = kids
    except Exception as exc:
        return size, exc
    return size, None


async def check(
    store: Manager, provider: Provider, target: Descriptor, want: Platform | None = None
) -> tuple[bool, list[Descriptor], list[Descriptor], list[Descriptor]]:
    """``(available, required, present, missing)`` like containerd's ``images.Check``."""
    want = want or platforms.host()
    try:
        await store.info(target.digest)
    except NotFoundError:
        return False, [], [], [target]
    required: list[Descriptor] = []
    present: list[Descriptor] = []
    missing: list[Descriptor] = []
    manifests = [target]
    if target.media_type in INDEX_TYPES:
        manifests = _best_manifests(await children(provider, target), want)
    if not manifests:
        return False, [], [], []
    for manifest in manifests:
        try:
            parts = [manifest, *await children(provider, manifest)]
        except NotFoundError:
            return False, [], [], [manifest]
        for desc in parts:
            required.append(desc)
            try:
                await store.info(desc.digest)
                present.append(desc)
            except NotFoundError:
                missing.append(desc)
    return True, required, present, missing
