"""Pulling images: fetch an image's graph into the content store, unpack it, record it.

The flow is containerd's client-side pull (Go client ``Pull``/``Fetch``):

1. the whole operation runs under a lease (``Client.with_lease``: random id,
   ``containerd.io/gc.expire`` 24 h ahead, deleted at the end), so nothing
   written is collected half-way and nothing is left behind when it fails;
2. the resolver turns the reference into a root descriptor;
3. the graph is walked: an index's manifests are filtered by platform
   (the best match for the host by default, ``platforms`` to choose, or all),
   each manifest's config and layers are fetched; each blob streams into
   ``Content.Write`` under the ref ``<kind>-<digest>`` with its expected
   digest and size, a blob already present is skipped, an interrupted
   ingest of an earlier pull is resumed from its offset;
4. parents carry ``containerd.io/gc.ref.content.*`` labels naming their
   children (``m.<i>``, ``config``, ``l.<i>``) and every blob
   ``containerd.io/distribution.source.<registry host>=<repository>``;
5. with unpacking, each selected manifest's layers are applied into the
   snapshotter (:mod:`pycontainerd.remotes.unpack`) while the fetch goes on:
   a layer is applied as soon as it, the layers below it and the config are
   in the content store (containerd 1.7's unpacker), so applying lower
   layers overlaps downloading upper ones; a failed fetch or apply cancels
   the rest (active snapshots are removed, ingests discarded);
6. the image record is created, or updated when the name exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from pycontainerd.core import content, platforms
from pycontainerd.core.closing import finish_shielded
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.images import Image
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes import reference
from pycontainerd.remotes.progress import Tracker
from pycontainerd.remotes.unpack import descriptor_from_json, parse_json
from pycontainerd.remotes.unpack import unpack_layers as apply_layers

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from pycontainerd.core import images
    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.snapshots import Snapshotter
    from pycontainerd.core.types import Descriptor
    from pycontainerd.remotes.resolver import Fetcher, Resolver
    from pycontainerd.remotes.services import ImageServices
    from pycontainerd.remotes.unpack import Applier

log = logging.getLogger(__name__)

#: Bytes gathered from the registry per ``Writer.write`` (one WRITE message each).
WRITE_BUFFER: Final = 1 << 20
LOCK_RETRY_SECONDS: Final = 30.0
#: Layer fetches of one manifest in flight when the resolver does not say.
DEFAULT_FETCH_WORKERS: Final = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformManifest:
    """A manifest the pull selected, with the platform its index gave it (if any)."""

    descriptor: Descriptor
    platform: Platform | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Unpacking:
    """Unpacking done by a fetch while it fetches.

    Attributes:
        snapshotter_name: the snapshotter's name (for the config's
            ``containerd.io/gc.ref.snapshot.<name>`` label).
        snapshotter: where the layers go.
        applier: the differ that applies them (the Diff service).
        select: which fetched manifests to unpack (all when ``None``).
        track: record ``unpack-<manifest digest>`` jobs in the tracker.
    """

    snapshotter_name: str
    snapshotter: Snapshotter
    applier: Applier
    select: Callable[[PlatformManifest], bool] | None = None
    track: bool = True


@dataclass(slots=True, kw_only=True)
class FetchResult:
    """What :func:`fetch` stored.

    Attributes:
        image: the image record (created or updated).
        manifests: the selected manifests.
        chain_ids: the top chain ID per unpacked manifest digest (when unpacking).
    """

    image: Image
    manifests: list[PlatformManifest] = field(default_factory=list)
    chain_ids: dict[str, str] = field(default_factory=dict)


def _wanted(want: Sequence[Platform]) -> list[Platform]:
    return list(want) or [platforms.host()]


def best_platform_match(want: Platform, descs: Sequence[Descriptor]) -> Descriptor | None:
    """The first of ``descs`` for ``want`` itself, else for the next platform it can also run.

    The order is :func:`pycontainerd.core.platforms.compatible`'s; a descriptor
    without a platform never matches.
    """
    for candidate in platforms.compatible(want):
        for desc in descs:
            if desc.platform is not None and platforms.matches(candidate, desc.platform):
                return desc
    return None


def select_manifests(
    children: Sequence[Descriptor], want: Sequence[Platform], *, all_platforms: bool
) -> list[Descriptor]:
    """The children of an index a pull follows.

    Each wanted platform picks its best match (the platform itself, then the
    ones it can also run); nested indexes whose platform matches (or that
    have none) are followed too.

    Raises:
        NotFoundError: nothing matches.
    """
    known = [c for c in children if mt.is_manifest(c.media_type) or mt.is_index(c.media_type)]
    if all_platforms:
        return known
    out: list[Descriptor] = []
    for plat in _wanted(want):
        pick = best_platform_match(plat, known)
        if pick is None:
            pick = next((c for c in known if c.platform is None), None)
        if pick is not None and pick not in out:
            out.append(pick)
    return out


def limit_manifests(
    children: Sequence[Descriptor], want: Sequence[Platform], limit: int
) -> list[Descriptor]:
    """The first ``limit`` of an index's ``children``, the preferred platforms first.

    As upstream's ``LimitManifests``: a stable sort by the first of ``want``
    each child's platform matches (children without a platform last; with no
    ``want``, the index's order), then the first ``limit``.

    Raises:
        NotFoundError: there are no children to choose from.
    """
    if not children:
        msg = "no match for platform in manifest: not found"
        raise NotFoundError(msg)

    def rank(child: Descriptor) -> int:
        if child.platform is None:
            return len(want) + 1
        return next(
            (i for i, w in enumerate(want) if platforms.matches(w, child.platform)), len(want)
        )

    return sorted(children, key=rank)[:limit]


class _Walker:
    def __init__(
        self,
        store: content.Store,
        fetcher: Fetcher,
        ref: reference.Reference,
        *,
        want: Sequence[Platform],
        all_platforms: bool,
        tracker: Tracker,
        unpacking: Unpacking | None = None,
        all_metadata: bool = False,
        metadata_only: bool = False,
        manifest_limit: int = 0,
    ) -> None:
        self.store = store
        self.manifest_limit = manifest_limit
        self.fetcher = fetcher
        self.want = want
        self.all_platforms = all_platforms
        self.all_metadata = all_metadata or metadata_only
        self.metadata_only = metadata_only
        self.tracker = tracker
        self.source_key = mt.SOURCE_LABEL_PREFIX + ref.hostname
        self.repository = ref.repository
        self.manifests: list[PlatformManifest] = []
        self.unpacking = unpacking
        self.chain_ids: dict[str, str] = {}
        #: set once the blob of that digest is in the content store (with its labels)
        self._stored: dict[str, asyncio.Event] = {}

    # -- labels ---------------------------------------------------------------------

    def _source_labels(self, existing: Mapping[str, str] | None = None) -> dict[str, str]:
        repos = [r for r in (existing or {}).get(self.source_key, "").split(",") if r]
        if self.repository not in repos:
            repos.append(self.repository)
        return {self.source_key: ",".join(repos)}

    async def _merge_labels(self, dgst: str, labels: Mapping[str, str]) -> None:
        info = await self.store.info(dgst)
        new = dict(labels)
        new.update(self._source_labels(info.labels))
        if all(info.labels.get(k) == v for k, v in new.items()):
            return
        await self.store.update(
            content.Info(digest=dgst, labels=new), *(f"labels.{k}" for k in new)
        )

    # -- blobs ------------------------------------------------------------------------

    async def _open(self, ref: str, desc: Descriptor) -> content.Writer | None:
        """A writer for ``ref``, or ``None`` when the blob exists already (now leased)."""
        delay = 0.016
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_RETRY_SECONDS
        while True:
            try:
                return await self.store.writer(ref, total=desc.size, expected=desc.digest)
            except AlreadyExistsError:
                return None
            except UnavailableError:
                # another pull holds this ingest: wait for it (upstream's OpenWriter);
                # once it has committed, the next try answers AlreadyExists, leased
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                delay = min(delay * 2, 2.0)

    def _event(self, dgst: str) -> asyncio.Event:
        event = self._stored.get(dgst)
        if event is None:
            event = self._stored[dgst] = asyncio.Event()
        return event

    async def stored(self, desc: Descriptor) -> None:
        """Wait until this walk has put ``desc`` into the content store."""
        await self._event(desc.digest).wait()

    async def store_blob(
        self,
        desc: Descriptor,
        *,
        data: bytes | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        """Put ``desc`` into the content store (from ``data`` or the registry)."""
        await self._store_blob(desc, data=data, labels=labels)
        self._event(desc.digest).set()

    async def _store_blob(
        self,
        desc: Descriptor,
        *,
        data: bytes | None,
        labels: Mapping[str, str] | None,
    ) -> None:
        labels = labels or {}
        ref = mt.ref_key(desc.media_type, desc.digest)
        all_labels = {**labels, **self._source_labels()}
        # No "do we have it" Info first: a writer opened with the digest of a blob the
        # namespace has answers AlreadyExists *and* adds the blob to the pull's lease (as
        # upstream's Fetch relies on), so the collector cannot take a blob nothing else
        # references yet (an image just removed, say) while this pull counts on it.
        writer = await self._open(ref, desc)
        if writer is None:
            await self._merge_labels(desc.digest, labels)
            self.tracker.set(ref, "exists", total=desc.size, media_type=desc.media_type)
            return
        try:
            await self._write(writer, ref, desc, data)
            try:
                await writer.commit(desc.size, desc.digest, labels=all_labels)
            except AlreadyExistsError:
                await self._merge_labels(desc.digest, labels)
        except UnavailableError:
            # a transfer that kept breaking: keep the ingest, a later pull resumes it
            self.tracker.set(ref, "error")
            raise
        except BaseException:
            # bad bytes, or cancelled because another blob failed: discard the ingest
            self.tracker.set(ref, "error")
            await finish_shielded(self._discard(writer, ref))
            raise
        finally:
            await writer.close()
        self.tracker.set(ref, "done", total=desc.size)

    async def _discard(self, writer: content.Writer, ref: str) -> None:
        await writer.close()
        with contextlib.suppress(NotFoundError):
            await self.store.abort(ref)

    async def _write(
        self, writer: content.Writer, ref: str, desc: Descriptor, data: bytes | None
    ) -> None:
        if data is not None:
            await writer.truncate(0)
            await writer.write(data)
            return
        offset = (await writer.status()).offset
        if offset > desc.size:
            await writer.truncate(0)
            offset = 0
        if offset:
            log.debug("resuming %s at %d", ref, offset)
        self.tracker.set(
            ref, "downloading", offset=offset, total=desc.size, media_type=desc.media_type
        )
        if offset == desc.size:
            return
        # The writer hashes what it is given (or the daemon does), so the
        # fetcher need not: one digest of the blob instead of two.
        sink = writer.thread_sink() if isinstance(writer, content.ThreadSinkWriter) else None
        if sink is not None:
            # a writer on this machine: a thread reads, hashes and writes each blob
            def progress(done: int) -> None:
                self.tracker.set(ref, "downloading", offset=done)

            await self.fetcher.fetch_into(desc, sink, offset=offset, progress=progress)
        else:
            await self._write_chunks(writer, ref, desc, offset)
        actual = writer.digest()
        if actual != desc.digest:
            msg = f"{desc.digest}: digest mismatch: the registry sent content with {actual}"
            raise DataLossError(msg)

    async def _write_chunks(
        self, writer: content.Writer, ref: str, desc: Descriptor, offset: int
    ) -> None:
        stream = self.fetcher.fetch(desc, offset=offset, verify=False)
        async with contextlib.aclosing(stream):
            async for block in content.gather_chunks(stream, WRITE_BUFFER):
                await writer.write(block)
                offset += len(block)
                if len(block) >= WRITE_BUFFER:  # the last, shorter block: reported below
                    self.tracker.set(ref, "downloading", offset=offset)
        self.tracker.set(ref, "downloading", offset=offset)

    async def _small(self, desc: Descriptor) -> bytes:
        ref = mt.ref_key(desc.media_type, desc.digest)
        try:
            return await content.read_blob(self.store, desc.digest)
        except NotFoundError:
            pass
        self.tracker.set(ref, "downloading", total=desc.size, media_type=desc.media_type)
        return await self.fetcher.fetch_bytes(desc)

    # -- the graph ------------------------------------------------------------------------

    async def walk(
        self, desc: Descriptor, platform: Platform | None = None, *, with_layers: bool = True
    ) -> None:
        """Fetch ``desc`` and what it references (a manifest's layers only ``with_layers``).

        With all metadata (``ctr content fetch --all-metadata``), an index's
        manifests of every platform are fetched with their configs; the
        layers only of those the wanted platforms select (none with
        metadata only), as upstream's ``FilterManifestByPlatformHandler``.
        """
        if mt.is_index(desc.media_type):
            await self._walk_index(desc, with_layers=with_layers)
        elif mt.is_manifest(desc.media_type):
            await self._walk_manifest(desc, platform, with_layers=with_layers)
        else:
            await self.store_blob(desc)

    async def _walk_index(self, desc: Descriptor, *, with_layers: bool) -> None:
        data = await self._small(desc)
        doc = parse_json(data, desc)
        raw = doc.get("manifests") or []
        if not isinstance(raw, list):
            msg = f"index {desc.digest}: manifests is not a list"
            raise InvalidArgumentError(msg)
        children = [descriptor_from_json(x, desc.digest) for x in raw]
        chosen = (
            []
            if self.metadata_only
            else select_manifests(children, self.want, all_platforms=self.all_platforms)
        )
        followed = chosen
        if self.all_metadata:
            followed = [
                c for c in children if mt.is_manifest(c.media_type) or mt.is_index(c.media_type)
            ]
        elif not chosen:
            want = ", ".join(str(p) for p in _wanted(self.want))
            msg = f"no match for platform {want} in manifest {desc.digest}"
            raise NotFoundError(msg)
        if self.manifest_limit > 0:
            followed = limit_manifests(followed, self.want, self.manifest_limit)
            chosen = [c for c in chosen if c in followed]
        self.tracker.add_children(
            mt.ref_key(desc.media_type, desc.digest),
            [mt.ref_key(c.media_type, c.digest) for c in followed],
        )
        await self.store_blob(desc, data=data, labels=_child_labels(followed))
        async with asyncio.TaskGroup() as tg:
            for child in followed:
                full = with_layers and child in chosen
                tg.create_task(self.walk(child, child.platform, with_layers=full))

    async def _walk_manifest(
        self, desc: Descriptor, platform: Platform | None, *, with_layers: bool
    ) -> None:
        data = await self._small(desc)
        doc = parse_json(data, desc)
        config = descriptor_from_json(doc.get("config"), desc.digest)
        raw = doc.get("layers") or []
        if not isinstance(raw, list):
            msg = f"manifest {desc.digest}: layers is not a list"
            raise InvalidArgumentError(msg)
        layers = [descriptor_from_json(x, desc.digest) for x in raw]
        self.tracker.add_children(
            mt.ref_key(desc.media_type, desc.digest),
            [
                mt.ref_key(c.media_type, c.digest)
                for c in (config, *(layers if with_layers else ()))
            ],
        )
        await self.store_blob(desc, data=data, labels=_child_labels([config, *layers]))
        if not with_layers:  # metadata of a platform not pulled: the manifest and its config
            await self.store_blob(config)
            return
        chosen_manifest = PlatformManifest(descriptor=desc, platform=platform)
        self.manifests.append(chosen_manifest)
        for layer in layers:
            self.tracker.set(
                mt.ref_key(layer.media_type, layer.digest),
                "waiting",
                total=layer.size,
                media_type=layer.media_type,
            )
        unpacking = self.unpacking
        if unpacking is not None and unpacking.select is not None:
            unpacking = unpacking if unpacking.select(chosen_manifest) else None
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.store_blob(config))
            # Layers are taken in manifest order by as many workers as blobs may
            # be fetched at once (upstream's unpacker acquires its limiter in
            # order too): the bottom layers arrive first and are applied while
            # the upper ones download. Started all at once, they would finish
            # in random order and the applies would wait for nearly all of them.
            pending = iter(layers)
            for _ in range(min(len(layers), self._fetch_workers())):
                tg.create_task(self._store_in_order(pending))
            if unpacking is not None:
                # in the same group: a failed fetch cancels it, a failed apply the fetches
                tg.create_task(self._unpack(unpacking, desc, config, layers))

    def _fetch_workers(self) -> int:
        limit = getattr(self.fetcher.resolver, "max_concurrent", 0)
        return limit if isinstance(limit, int) and limit > 0 else DEFAULT_FETCH_WORKERS

    async def _store_in_order(self, pending: Iterator[Descriptor]) -> None:
        for layer in pending:
            await self.store_blob(layer)

    async def _unpack(
        self,
        unpacking: Unpacking,
        manifest: Descriptor,
        config: Descriptor,
        layers: Sequence[Descriptor],
    ) -> None:
        job = f"unpack-{manifest.digest}"
        if unpacking.track:
            self.tracker.set(job, "unpacking")
        top = await apply_layers(
            self.store,
            unpacking.snapshotter,
            unpacking.applier,
            config,
            layers,
            snapshotter_name=unpacking.snapshotter_name,
            ready=self.stored,
        )
        self.chain_ids[manifest.digest] = top
        if unpacking.track:
            self.tracker.set(job, "done")


def _child_labels(children: Sequence[Descriptor]) -> dict[str, str]:
    """``containerd.io/gc.ref.content.*`` labels for ``children`` (upstream's ChildGCLabels)."""
    counters: dict[str, int] = {}
    out: dict[str, str] = {}
    for child in children:
        prefix = mt.child_label_prefix(child.media_type)
        if prefix.endswith("config"):
            out[prefix] = child.digest
            continue
        i = counters.get(prefix, 0)
        counters[prefix] = i + 1
        out[f"{prefix}{i}"] = child.digest
    return out


async def _unwrap(coro: object) -> None:
    """Run ``coro``; a TaskGroup's single error is re-raised as itself."""
    try:
        await coro  # type: ignore[misc]
    except ExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, ExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def record_image(
    image_store: images.Store, name: str, target: Descriptor, labels: Mapping[str, str]
) -> Image:
    """Create the image ``name``, or point the existing one at ``target``."""
    image = Image(name=name, target=target, labels=dict(labels))
    try:
        return await image_store.create(image)
    except AlreadyExistsError:
        return await image_store.update(image)


async def fetch(
    client: ImageServices,
    ref: str,
    resolver: Resolver,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    labels: Mapping[str, str] | None = None,
    tracker: Tracker | None = None,
    create_image: bool = True,
    unpacking: Unpacking | None = None,
    all_metadata: bool = False,
    metadata_only: bool = False,
    resolved: tuple[str, Descriptor] | None = None,
    manifest_limit: int = 0,
) -> FetchResult:
    """Fetch ``ref`` into the content store and record the image (``ctr content fetch``).

    ``manifest_limit`` (> 0) keeps at most that many manifests of each index,
    the best match for ``platforms`` first (the transfer service's
    ``ImageStore.manifest_limit``; see :func:`limit_manifests`).

    ``resolved`` is ``(name, root descriptor)`` when the caller resolved ``ref``
    already (the transfer service reports resolution on its own).

    Runs under a lease of its own unless one is current (as the Go client's
    ``Fetch``), so the blobs survive until the image record references them.
    With ``unpacking``, the selected manifests are unpacked as their layers
    arrive (their top chain IDs in ``chain_ids``); the image is recorded
    only once everything is fetched and unpacked.

    Raises:
        InvalidArgumentError: a malformed reference or manifest.
        NotFoundError: unknown reference, or no manifest for the platform.
        DataLossError: a blob did not match its digest (its ingest is discarded).
        UnavailableError, UnauthenticatedError, OutOfRangeError, UnimplementedError:
            as :meth:`Resolver.resolve` and :meth:`Fetcher.fetch`.
    """
    async with client.with_lease():
        return await _fetch(
            client,
            ref,
            resolver,
            platforms=platforms,
            all_platforms=all_platforms,
            labels=labels,
            tracker=tracker or Tracker(),
            create_image=create_image,
            unpacking=unpacking,
            all_metadata=all_metadata,
            metadata_only=metadata_only,
            resolved=resolved,
            manifest_limit=manifest_limit,
        )


async def _fetch(
    client: ImageServices,
    ref: str,
    resolver: Resolver,
    *,
    platforms: Sequence[Platform],
    all_platforms: bool,
    labels: Mapping[str, str] | None,
    tracker: Tracker,
    create_image: bool,
    unpacking: Unpacking | None,
    all_metadata: bool = False,
    metadata_only: bool = False,
    resolved: tuple[str, Descriptor] | None = None,
    manifest_limit: int = 0,
) -> FetchResult:
    if resolved is None:
        tracker.set(ref, "resolving")
        name, root = await resolver.resolve(ref)
        tracker.set(ref, "resolved")
    else:
        name, root = resolved
    store = client.content_store()
    walker = _Walker(
        store,
        resolver.fetcher(name),
        reference.parse(name),
        want=platforms,
        all_platforms=all_platforms,
        tracker=tracker,
        unpacking=unpacking,
        all_metadata=all_metadata,
        metadata_only=metadata_only,
        manifest_limit=manifest_limit,
    )
    await _unwrap(walker.walk(root))
    result = FetchResult(
        image=Image(name=name, target=root),
        manifests=walker.manifests,
        chain_ids=walker.chain_ids,
    )
    if create_image:
        result.image = await record_image(client.image_store(), name, root, labels or {})
    return result


def _resolve_failed(exc: ContainerdError, ref: str) -> ContainerdError:
    prefix = f"failed to resolve reference {go_quote(ref)}: "
    if exc.message.startswith("failed to resolve reference"):
        return exc  # the resolver said so already
    try:
        return type(exc)(prefix + exc.message)
    except TypeError:
        return exc


async def pull(
    client: ImageServices,
    ref: str,
    resolver: Resolver,
    *,
    platforms: Sequence[Platform] = (),
    all_platforms: bool = False,
    labels: Mapping[str, str] | None = None,
    unpack_layers: bool = True,
    snapshotter: str | None = None,
    tracker: Tracker | None = None,
    all_metadata: bool = False,
) -> FetchResult:
    """Pull ``ref``: fetch and unpack each selected manifest under a lease, record the image.

    Layers are unpacked while later ones are still being fetched.

    A failed resolve is reported as containerd's client Pull does:
    ``failed to resolve reference "<ref>": <resolver's error>`` (same error class).

    Raises:
        as :func:`fetch`, plus the Snapshots and Diff services' errors.
    """
    tracker = tracker or Tracker()
    tracker.set(ref, "resolving")
    try:
        resolved = await resolver.resolve(ref)
    except ContainerdError as exc:
        raise _resolve_failed(exc, ref) from None
    tracker.set(ref, "resolved")
    name = snapshotter or client.snapshotter
    unpacking = None
    if unpack_layers:
        unpacking = Unpacking(
            snapshotter_name=name,
            snapshotter=client.snapshot_service(name),
            applier=client.diff_service(),
        )
    async with client.with_lease():
        result = await fetch(
            client,
            ref,
            resolver,
            platforms=platforms,
            all_platforms=all_platforms,
            labels=labels,
            tracker=tracker,
            create_image=False,
            unpacking=unpacking,
            all_metadata=all_metadata,
            resolved=resolved,
        )
        result.image = await record_image(
            client.image_store(), result.image.name, result.image.target, labels or {}
        )
    return result
