"""Pushing images: upload an image's graph from the content store to a registry.

Children go before their parents (layers and config, then manifests, the
root last under the tag), as the registry checks that what a manifest
references exists. For each blob the registry is asked first (``HEAD``); a
blob the content store says came from another repository of the same
registry (``containerd.io/distribution.source.<host>``) is mounted from there
(``POST ...?mount=<digest>&from=<repo>``); otherwise it is uploaded in one
``PUT`` or, with ``chunk_size``, in ``PATCH`` chunks. Manifests and indexes
are ``PUT`` to ``manifests/<digest>`` and the root to ``manifests/<tag>``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pycontainerd.core import content, platforms
from pycontainerd.core.errdefs import NotFoundError
from pycontainerd.core.types import Descriptor
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes import reference
from pycontainerd.remotes.progress import Tracker
from pycontainerd.remotes.unpack import descriptor_from_json, parse_json

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Coroutine, Iterable

    from pycontainerd.core.platforms import Platform
    from pycontainerd.remotes.resolver import Pusher, Resolver
    from pycontainerd.remotes.services import ImageServices

_READ_CHUNK = 1 << 20


async def _children(
    store: content.Store, desc: Descriptor, want: Platform | None
) -> list[Descriptor]:
    if not (mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type)):
        return []
    doc = parse_json(await content.read_blob(store, desc.digest), desc)
    if mt.is_index(desc.media_type):
        raw = doc.get("manifests") or []
        kids = [descriptor_from_json(x, desc.digest) for x in raw] if isinstance(raw, list) else []
        if want is not None:
            kids = [k for k in kids if k.platform is None or platforms.only(want, k.platform)]
        return kids
    raw = doc.get("layers") or []
    layers = [descriptor_from_json(x, desc.digest) for x in raw] if isinstance(raw, list) else []
    return [descriptor_from_json(doc.get("config"), desc.digest), *layers]


async def push(  # noqa: PLR0915 - one flow, kept in one piece
    client: ImageServices,
    ref: str,
    resolver: Resolver,
    *,
    local: str | None = None,
    platform: Platform | None = None,
    chunk_size: int = 0,
    tracker: Tracker | None = None,
    manifest: Descriptor | None = None,
) -> Descriptor:
    """Push the image ``local`` (default: ``ref``) to ``ref``; return the root descriptor.

    With ``manifest`` (``ctr images push --manifest <digest>``) that manifest
    or index from the content store is pushed instead of an image's target;
    its size is looked up there.

    Raises:
        NotFoundError: the image, or content it references, is not in the store.
        UnavailableError, FailedPreconditionError, UnauthenticatedError: the
            registry refused or could not be reached.
    """
    tracker = tracker or Tracker()
    store = client.content_store()
    if manifest is None:
        image = await client.image_store().get(local or ref)
        root, name = image.target, image.name
    else:
        try:
            info = await store.info(manifest.digest)
        except NotFoundError:
            msg = f"manifest {manifest.digest} is not in the content store"
            raise NotFoundError(msg) from None
        root = Descriptor(media_type=manifest.media_type, digest=manifest.digest, size=info.size)
        name = ref
    target = reference.parse(ref)
    pusher = resolver.pusher(ref)
    source_key = mt.SOURCE_LABEL_PREFIX + target.hostname

    order: list[Descriptor] = []
    top_down: list[Descriptor] = []
    seen: set[str] = set()

    async def visit(desc: Descriptor) -> None:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        top_down.append(desc)
        kids = await _children(store, desc, platform)
        tracker.add_children(
            mt.ref_key(desc.media_type, desc.digest),
            [mt.ref_key(c.media_type, c.digest) for c in kids],
        )
        for child in kids:
            await visit(child)
        order.append(desc)

    await visit(root)
    for desc in top_down:  # the tree appears parents first, as upstream's push shows it
        tracker.set(
            mt.ref_key(desc.media_type, desc.digest),
            "waiting",
            total=desc.size,
            media_type=desc.media_type,
        )
    blobs = [d for d in order if not (mt.is_index(d.media_type) or mt.is_manifest(d.media_type))]
    manifests = [d for d in order if d not in blobs]

    async def push_one(desc: Descriptor) -> None:
        key = mt.ref_key(desc.media_type, desc.digest)
        try:
            info = await store.info(desc.digest)
        except NotFoundError:
            msg = f"content {desc.digest} of {name} is not in the content store"
            raise NotFoundError(msg) from None
        if await pusher.exists(desc):
            tracker.set(key, "exists", total=desc.size, media_type=desc.media_type)
            return
        for repo in info.labels.get(source_key, "").split(","):
            if repo and repo != target.repository and await pusher.mount(desc, repo):
                tracker.set(key, "mounted", total=desc.size, media_type=desc.media_type)
                return
        tracker.set(key, "uploading", offset=0, total=desc.size, media_type=desc.media_type)

        def progress(n: int) -> None:
            tracker.set(key, "uploading", offset=n)

        await pusher.push_blob(
            desc,
            lambda offset: _read(store, desc.digest, offset),
            chunk_size=chunk_size,
            progress=progress,
        )
        tracker.set(key, "done", total=desc.size, media_type=desc.media_type)

    await _gather(push_one(d) for d in blobs)
    for desc in manifests:
        await _push_manifest(store, pusher, desc, tag="", tracker=tracker, root=False)
    await _push_manifest(store, pusher, root, tag=target.tag or "", tracker=tracker, root=True)
    return root


async def _push_manifest(
    store: content.Store,
    pusher: Pusher,
    desc: Descriptor,
    *,
    tag: str,
    tracker: Tracker,
    root: bool,
) -> None:
    key = mt.ref_key(desc.media_type, desc.digest)
    if not root and await pusher.exists(desc):
        tracker.set(key, "exists", total=desc.size, media_type=desc.media_type)
        return
    data = await content.read_blob(store, desc.digest)
    await pusher.push_manifest(desc, data, tag if root else "")
    tracker.set(key, "done", total=desc.size, media_type=desc.media_type)


async def _read(store: content.Store, dgst: str, offset: int) -> AsyncIterator[bytes]:
    reader = await store.reader_at(dgst)
    try:
        async for data in content.read_chunks(reader, _READ_CHUNK, offset):
            yield data
    finally:
        await reader.close()


async def _gather(coros: Iterable[Coroutine[object, object, None]]) -> None:
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
