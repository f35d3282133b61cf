"""The local transferrer (containerd's ``core/transfer/local``): image moves in the daemon.

A transfer request names a source and a destination as typed ``Any`` values
(:func:`endpoint`); the pair decides the operation, as upstream:

| source | destination | operation |
|---|---|---|
| ``OCIRegistry`` | ``ImageStore`` | pull: fetch, verify digests, unpack, record the image(s) |
| ``ImageStore`` | ``OCIRegistry`` | push |
| ``ImageStore`` | ``ImageExportStream`` | export an OCI archive over a stream |
| ``ImageImportStream`` | ``ImageStore`` | import an OCI / ``docker save`` archive from a stream |
| ``ImageStore`` | ``ImageStore`` | tag: the destination names the source's target |

Every operation runs under a lease (the caller's, else a new one deleted at
the end), so nothing written is collected half-way and nothing is left when it
fails. The work is :mod:`pycontainerd.remotes`'s code, run against the
daemon's own stores through :class:`LocalServices`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sys
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycontainerd.api import typeurl
from pycontainerd.api.convert import platform_from_proto
from pycontainerd.api.streams import Receiver, Sender, StreamClosedError
from pycontainerd.api.types.transfer import imagestore_pb2, importexport_pb2, registry_pb2
from pycontainerd.core import namespaces, platforms
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    UnimplementedError,
    UnknownError,
)
from pycontainerd.core.images import Image
from pycontainerd.core.leases import EXPIRE_LABEL
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.transfer.progress import Event, EventTracker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from google.protobuf import any_pb2

    from pycontainerd.core import content, images
    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.snapshots import Snapshotter
    from pycontainerd.core.types import Descriptor
    from pycontainerd.remotes.resolver import Resolver
    from pycontainerd.remotes.unpack import Applier
    from pycontainerd.transfer.streams import ManagedStream, StreamManager
    from pycontainerd.transfer.verifier import ImageVerifier

__all__ = [
    "ExportStream",
    "ImportStream",
    "LocalServices",
    "LocalTransferrer",
    "NoTransferError",
    "Registry",
    "Store",
    "TransferConfig",
    "endpoint",
]

log = logging.getLogger(__name__)

DEFAULT_SNAPSHOTTER = "overlayfs"
LEASE_EXPIRY = timedelta(hours=24)
REF_SOURCE_ANNOTATION = "io.containerd.import.ref-source"


@dataclass(slots=True)
class TransferConfig:
    """The plugin's configuration (``[plugins."io.containerd.transfer.v1.local"]``).

    Attributes:
        config_path: the ``hosts.toml`` root used when a request names none.
        max_concurrent_downloads: blobs fetched at the same time.
        max_concurrent_uploaded_layers: blobs pushed at the same time.
        default_snapshotter: the snapshotter of an unpack that names none.
    """

    config_path: str = ""
    max_concurrent_downloads: int = 3
    max_concurrent_uploaded_layers: int = 3
    default_snapshotter: str = DEFAULT_SNAPSHOTTER


class LocalServices:
    """The daemon's stores as :class:`pycontainerd.remotes.services.ImageServices`."""

    def __init__(self, metadata: Any, differ: Applier, snapshotter: str) -> None:
        self._md = metadata
        self._differ = differ
        self.snapshotter = snapshotter

    def content_store(self) -> content.Store:
        store: content.Store = self._md.content_store()
        return store

    def image_store(self) -> images.Store:
        store: images.Store = self._md.image_store()
        return store

    def snapshot_service(self, snapshotter: str | None = None) -> Snapshotter:
        sn: Snapshotter = self._md.snapshotter(snapshotter or self.snapshotter)
        return sn

    def diff_service(self) -> Applier:
        return self._differ

    @contextlib.asynccontextmanager
    async def with_lease(self) -> AsyncIterator[str]:
        """The current lease, else a new one (24 h expiry) deleted at the end."""
        current = namespaces.lease()
        if current:
            yield current
            return
        from pycontainerd.api.streams import generate_id

        manager = self._md.lease_store()
        until = (datetime.now(UTC) + LEASE_EXPIRY).strftime("%Y-%m-%dT%H:%M:%SZ")
        lease = await manager.create(generate_id("transfer"), labels={EXPIRE_LABEL: until})
        try:
            with namespaces.with_lease(lease.id):
                yield lease.id
        finally:
            await manager.delete(lease.id)


# -- warm-up ---------------------------------------------------------------------------

#: What the first transfer would otherwise import while it runs: the resolver
#: and the pull. httpx, httpcore and anyio are not among them: a pull's requests
#: are all reads, which never reach them (``remotes._http``). A push, an import
#: or an export imports the rest of what it needs when it runs.
WARM_MODULES: tuple[str, ...] = (
    "pycontainerd.remotes.resolver",
    "pycontainerd.remotes.pull",
)

_warming: concurrent.futures.Future[None] | None = None

#: httpx's command-line client, which ``import httpx`` loads whenever click,
#: rich and pygments are importable (they are in a development environment):
#: 80 ms on the first pull of a daemon that never runs it.
HTTPX_CLI = "httpx._main"
#: What httpcore tries to import each time it sets up a lock or an event (about
#: a hundred times per pull); an import that fails is retried, and each retry
#: searches every ``sys.path`` entry again.
SNIFFIO = "sniffio"


def trim_registry_stack() -> None:
    """Keep the registry stack from importing what this (daemon) process never uses.

    - httpx's command-line client: ``import httpx`` falls back to a stub
      ``httpx.main`` when its CLI module cannot be imported; a ``None`` entry
      in ``sys.modules`` makes it so. Nothing in the daemon runs httpx's CLI.
    - ``sniffio`` when it is not installed: its ``None`` entry makes httpcore's
      repeated ``import sniffio`` fail at once instead of searching the path.

    Only for the daemon's process: a library must not do this to its user's.
    """
    import importlib.util

    sys.modules.setdefault(HTTPX_CLI, None)  # type: ignore[arg-type]
    if SNIFFIO not in sys.modules and importlib.util.find_spec(SNIFFIO) is None:
        sys.modules[SNIFFIO] = None  # type: ignore[assignment]


def start_warm_up() -> concurrent.futures.Future[None]:
    """Import :data:`WARM_MODULES` in a worker thread, once per process.

    Called when a client opens a stream or starts a transfer (containerd 2.x's
    ``ctr`` opens its progress stream first), so the imports overlap the
    client's next round trip, and the daemon does not pay for the registry
    stack at start. A transfer awaits the returned future before it runs
    (:func:`warmed_up`): importing the same package from two threads at once
    can hand one of them a half-initialised module.
    """
    global _warming  # noqa: PLW0603 - one warm-up per process
    if _warming is None:
        _warming = concurrent.futures.Future()
        threading.Thread(
            target=_import_all, args=(_warming,), name="transfer-warm-up", daemon=True
        ).start()
    return _warming


async def warmed_up() -> None:
    """Wait until the warm-up (started now if need be) has finished."""
    await asyncio.wrap_future(start_warm_up())


def _import_all(done: concurrent.futures.Future[None]) -> None:
    import importlib

    trim_registry_stack()
    try:
        for name in WARM_MODULES:
            try:
                importlib.import_module(name)
            except ImportError:  # the transfer reports it when it needs the module
                log.debug("warm-up: cannot import %s", name, exc_info=True)
                break
    finally:
        done.set_result(None)


# -- endpoints -----------------------------------------------------------------------


@dataclass(slots=True)
class Registry:
    """``containerd.types.transfer.OCIRegistry``."""

    reference: str
    host_dir: str = ""
    default_scheme: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    auth: ManagedStream | None = None
    http_debug: int = registry_pb2.DISABLED
    logs: ManagedStream | None = None

    def __str__(self) -> str:
        return f"OCI Registry ({self.reference})"


@dataclass(slots=True)
class Store:
    """``containerd.types.transfer.ImageStore``."""

    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    platforms: list[Platform] = field(default_factory=list)
    all_metadata: bool = False
    manifest_limit: int = 0
    extra_references: list[imagestore_pb2.ImageReference] = field(default_factory=list)
    unpacks: list[tuple[Platform, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"Image Store ({self.name})" if self.name else "Image Store"


@dataclass(slots=True)
class ImportStream:
    """``containerd.types.transfer.ImageImportStream``."""

    stream: ManagedStream
    media_type: str = ""
    force_compress: bool = False

    def __str__(self) -> str:
        return "Image Import Stream"


@dataclass(slots=True)
class ExportStream:
    """``containerd.types.transfer.ImageExportStream``."""

    stream: ManagedStream
    media_type: str = ""
    platforms: list[Platform] = field(default_factory=list)
    all_platforms: bool = False
    skip_compatibility_manifest: bool = False
    skip_non_distributable: bool = False

    def __str__(self) -> str:
        return "Image Export Stream"


Endpoint = Registry | Store | ImportStream | ExportStream


def _stream(manager: StreamManager, ns: str, name: str, what: str) -> ManagedStream:
    if not name:
        msg = f"{what}: no stream given"
        raise InvalidArgumentError(msg)
    return manager.get(ns, name)


def endpoint(value: any_pb2.Any, manager: StreamManager, ns: str, role: str) -> Endpoint:
    """The endpoint an ``Any`` of a transfer request names (``role``: source/destination).

    Raises:
        InvalidArgumentError: a type the transfer service does not know, or a
            malformed value.
        NotFoundError: a stream it names is not open.
    """
    url = value.type_url
    if typeurl.is_type(value, registry_pb2.OCIRegistry):
        reg = typeurl.unpack_as(value, registry_pb2.OCIRegistry)
        res = reg.resolver
        auth = None
        if res.auth_stream:
            auth = _stream(manager, ns, res.auth_stream, "auth stream")
        logs = None
        if res.http_debug != registry_pb2.DISABLED and res.logs_stream:
            logs = _stream(manager, ns, res.logs_stream, "HTTP debug logs stream")
        return Registry(
            reference=reg.reference,
            host_dir=res.host_dir,
            default_scheme=res.default_scheme,
            headers=dict(res.headers),
            auth=auth,
            http_debug=res.http_debug,
            logs=logs,
        )
    if typeurl.is_type(value, imagestore_pb2.ImageStore):
        st = typeurl.unpack_as(value, imagestore_pb2.ImageStore)
        return Store(
            name=st.name,
            labels=dict(st.labels),
            platforms=[platform_from_proto(p) for p in st.platforms],
            all_metadata=st.all_metadata,
            manifest_limit=st.manifest_limit,
            extra_references=list(st.extra_references),
            unpacks=[(platform_from_proto(u.platform), u.snapshotter) for u in st.unpacks],
        )
    if typeurl.is_type(value, importexport_pb2.ImageImportStream):
        imp = typeurl.unpack_as(value, importexport_pb2.ImageImportStream)
        return ImportStream(
            stream=_stream(manager, ns, imp.stream, "import stream"),
            media_type=imp.media_type,
            force_compress=imp.force_compress,
        )
    if typeurl.is_type(value, importexport_pb2.ImageExportStream):
        exp = typeurl.unpack_as(value, importexport_pb2.ImageExportStream)
        return ExportStream(
            stream=_stream(manager, ns, exp.stream, "export stream"),
            media_type=exp.media_type,
            platforms=[platform_from_proto(p) for p in exp.platforms],
            all_platforms=exp.all_platforms,
            skip_compatibility_manifest=exp.skip_compatibility_manifest,
            skip_non_distributable=exp.skip_non_distributable,
        )
    msg = f"unsupported transfer {role} type {url!r}" if url else f"transfer {role} is missing"
    raise InvalidArgumentError(msg)


# -- the transferrer -----------------------------------------------------------------


class NoTransferError(UnimplementedError):
    """No operation moves this source type to this destination type."""


def _nothing(_: Event) -> None:
    return None


class LocalTransferrer:
    """Runs transfers against the daemon's stores."""

    def __init__(
        self,
        services: LocalServices,
        config: TransferConfig | None = None,
        *,
        verifiers: Mapping[str, ImageVerifier] | None = None,
    ) -> None:
        self.services = services
        self.config = config or TransferConfig()
        self.verifiers = dict(sorted((verifiers or {}).items()))
        self._uploads = asyncio.Semaphore(max(1, self.config.max_concurrent_uploaded_layers))

    def expect_applies(self) -> None:
        """A transfer into the image store is starting: let the differ get its applier ready."""
        expect = getattr(self.services.diff_service(), "expect_applies", None)
        if callable(expect):
            expect()

    async def transfer(
        self, src: Endpoint, dst: Endpoint, progress: Callable[[Event], None] | None = None
    ) -> None:
        """Move ``src`` to ``dst`` (see the module's table).

        Raises:
            UnimplementedError: no operation for this pair of types.
            and what the operation raises.
        """
        emit = progress or _nothing
        async with self.services.with_lease():
            if isinstance(src, Registry) and isinstance(dst, Store):
                return await self.pull(src, dst, emit)
            if isinstance(src, Store) and isinstance(dst, Registry):
                return await self.push(src, dst, emit)
            if isinstance(src, Store) and isinstance(dst, ExportStream):
                return await self.export(src, dst, emit)
            if isinstance(src, ImportStream) and isinstance(dst, Store):
                return await self.import_(src, dst, emit)
            if isinstance(src, Store) and isinstance(dst, Store):
                return await self.tag(src, dst, emit)
        msg = f"unable to transfer from {src} to {dst}: not implemented"
        raise NoTransferError(msg)

    # -- registry ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _resolver(self, reg: Registry, *, concurrency: int) -> AsyncIterator[Resolver]:
        """The registry's resolver, dumping HTTP as its ``http_debug`` asks (upstream's).

        DEBUG and BOTH dump every request and response to the ``logs_stream``
        (a byte stream, closed at the end), else to the daemon's log; TRACE
        and BOTH log each request at debug level.
        """
        from pycontainerd.remotes.hosts import HostsConfig
        from pycontainerd.remotes.resolver import Resolver

        host_dir = reg.host_dir or self.config.config_path
        hosts = HostsConfig(
            hosts_dir=Path(host_dir) if host_dir else None,
            default_scheme=reg.default_scheme or "https",
            headers=tuple(reg.headers.items()),
        )
        dump: Callable[[bytes], Awaitable[None]] | None = None
        sender = None
        if reg.http_debug in (registry_pb2.DEBUG, registry_pb2.BOTH):
            if reg.logs is not None:
                sender = Sender(reg.logs)
                sender.start()
                dump = sender.write
            else:
                dump = _log_dump
        elif reg.http_debug == registry_pb2.TRACE:
            dump = _trace_dump
        try:
            async with Resolver(
                hosts,
                credentials=_credentials(reg) if reg.auth else None,
                max_concurrent=concurrency,
                http_dump=dump,
            ) as res:
                yield res
        finally:
            if sender is not None:
                with contextlib.suppress(StreamClosedError):
                    await sender.close()

    async def pull(self, reg: Registry, store: Store, emit: Callable[[Event], None]) -> None:
        """Fetch ``reg``'s image, unpack what ``store`` asks for, record the image(s)."""
        from pycontainerd.remotes.pull import PlatformManifest, Unpacking, fetch

        emit(Event(f"Resolving from {reg}"))
        tracker = EventTracker(reg.reference, emit)
        unpacking = None
        if store.unpacks:
            wanted = [p for p, _ in store.unpacks]
            name = next((s for _, s in store.unpacks if s), self.config.default_snapshotter)

            def select(pm: PlatformManifest) -> bool:
                return pm.platform is None or any(platforms.matches(w, pm.platform) for w in wanted)

            unpacking = Unpacking(
                snapshotter_name=name,
                snapshotter=self.services.snapshot_service(name),
                applier=self.services.diff_service(),
                select=select,
                track=False,
            )
        async with self._resolver(reg, concurrency=self.config.max_concurrent_downloads) as res:
            try:
                name, root = await res.resolve(reg.reference)
            except Exception as exc:
                raise _prefixed(exc, "failed to resolve image: ") from None
            if root.media_type in SCHEMA1:
                msg = "schema 1 image manifests are no longer supported: invalid argument"
                raise InvalidArgumentError(msg)
            await self._verify(name, root)
            emit(Event(f"Pulling from {reg}"))
            emit(Event("fetching image content", name))
            tracker.root = name
            result = await fetch(
                self.services,
                reg.reference,
                res,
                platforms=store.platforms,
                all_platforms=not store.platforms,
                tracker=tracker,
                create_image=False,
                unpacking=unpacking,
                all_metadata=store.all_metadata,
                resolved=(name, root),
                manifest_limit=store.manifest_limit,
            )
        saved = await self._store(store, result.image.target, default_name=result.image.name)
        for image in saved:
            emit(Event("saved", image.name))
        emit(Event(f"Completed pull from {reg}"))
        tracker.repeat_latest()

    async def _verify(self, name: str, root: Descriptor) -> None:
        """Ask every image verifier before anything is fetched; any may block the pull.

        The errors are upstream's plain ones (gRPC Unknown), word for word.
        """
        from pycontainerd.transfer.verifier import VerifierError

        for vid, verifier in self.verifiers.items():
            try:
                judgement = await verifier.verify_image(name, root)
            except VerifierError as exc:
                log.error("image verifier %s gave no judgement on %s: %s", vid, name, exc)
                msg = (
                    f"blocking pull of {name} with digest {root.digest}: "
                    f"image verifier {vid} returned error: {exc}"
                )
                raise UnknownError(msg) from None
            if not judgement.ok:
                log.warning("image verifier %s blocked pull of %s: %s", vid, name, judgement.reason)
                msg = (
                    f"image verifier {vid} blocked pull of {name} with digest {root.digest} "
                    f"for reason: {judgement.reason}"
                )
                raise UnknownError(msg)
            log.debug("image verifier %s allowed pull of %s: %s", vid, name, judgement.reason)

    async def push(self, store: Store, reg: Registry, emit: Callable[[Event], None]) -> None:
        """Push ``store``'s image to ``reg``."""
        from pycontainerd.remotes.push import push

        name = store.name or reg.reference
        image = await self.services.image_store().get(name)
        emit(Event(f"Pushing to {reg}"))
        emit(Event("pushing content", image.name))
        tracker = EventTracker(image.name, emit)
        platform = store.platforms[0] if len(store.platforms) == 1 else None
        async with self._resolver(
            reg, concurrency=self.config.max_concurrent_uploaded_layers
        ) as res:
            await push(
                self.services,
                reg.reference,
                res,
                local=image.name,
                platform=platform,
                tracker=tracker,
            )
        emit(Event("pushed content", image.name))
        emit(Event(f"Completed push to {reg}"))
        tracker.repeat_latest()

    # -- image store ---------------------------------------------------------------

    def _names(self, store: Store, target: Descriptor, default_name: str = "") -> list[str]:
        names = [store.name] if store.name else []
        for ref in store.extra_references:
            if ref.is_prefix:
                continue
            names.append(f"{ref.name}@{target.digest}" if ref.add_digest else ref.name)
        if not names and default_name:
            names.append(default_name)
        return names

    async def _store(
        self, store: Store, target: Descriptor, *, default_name: str = ""
    ) -> list[Image]:
        """Create or update the images ``store`` names for ``target``."""
        names = self._names(store, target, default_name)
        if not names:
            msg = "no image name found: not found"
            raise NotFoundError(msg)
        images = self.services.image_store()
        out = []
        for name in names:
            image = Image(name=name, target=target, labels=dict(store.labels))
            try:
                out.append(await images.create(image))
            except AlreadyExistsError:
                out.append(await images.update(image))
        return out

    async def tag(self, src: Store, dst: Store, emit: Callable[[Event], None]) -> None:
        """Name ``src``'s target with ``dst``'s names."""
        image = await self.services.image_store().get(src.name)
        del emit  # upstream's tag sends no progress
        await self._store(replace(dst, labels=dst.labels or image.labels), image.target)

    # -- archives ------------------------------------------------------------------

    async def export(self, src: Store, dst: ExportStream, emit: Callable[[Event], None]) -> None:
        """Write ``src``'s images as an OCI archive to ``dst``'s stream."""
        from pycontainerd.remotes.archive import ExportOptions, export_images

        names = ([src.name] if src.name else []) + [
            r.name for r in src.extra_references if not r.is_prefix
        ]
        if not names:
            msg = "no image name found: not found"
            raise NotFoundError(msg)
        opts = ExportOptions(
            platforms=dst.platforms,
            all_platforms=dst.all_platforms,
            skip_manifest_json=dst.skip_compatibility_manifest,
            skip_non_distributable=dst.skip_non_distributable,
        )
        emit(Event("Exporting"))
        sender = Sender(dst.stream)
        sender.start()
        try:
            # straight into the stream, as the client's credit allows: no copy on disk
            await export_images(self.services, _StreamOut(sender), names, opts)
        finally:
            await sender.close()
        emit(Event("Completed export"))

    async def import_(self, src: ImportStream, dst: Store, emit: Callable[[Event], None]) -> None:
        """Read an archive from ``src``'s stream into the content store; record and unpack."""
        from pycontainerd.remotes.archive import ImportOptions, import_images, refs
        from pycontainerd.remotes.unpack import unpack

        # as upstream: a stream naming no media type may be compressed (it is
        # read through); one that names a type is taken as a plain tar
        opts = ImportOptions(
            index_name=dst.name,
            all_platforms=not dst.platforms,
            decompress=not src.media_type,
            compress_layers=src.force_compress,
        )
        if dst.platforms:
            wanted = list(dst.platforms)
            opts.platform = lambda p: any(platforms.matches(w, p) for w in wanted)
        prefixed = [r for r in dst.extra_references if r.is_prefix]
        if prefixed:
            ref = prefixed[0]
            opts.ref_translator = (
                refs.add_ref_prefix(ref.name)
                if ref.allow_overwrite
                else refs.filter_ref_prefix(ref.name)
            )
            if ref.add_digest:
                opts.digest_ref = refs.digest_ref(ref.name)
                opts.skip_digest_for_named = ref.skip_named_digest
        emit(Event("Importing"))
        receiver = Receiver(src.stream)
        first = await receiver.chunk()
        if not first:
            await src.stream.close()
            msg = "import stream closed before any data was received"
            raise InvalidArgumentError(msg)
        # read straight from the stream, granting the client credit as it goes
        imported = await import_images(self.services, _StreamIn(receiver, first), opts)
        while await receiver.chunk():  # what follows the tar's end (padding)
            pass
        await src.stream.close()
        for image in imported:
            target = image.target
            emit(
                Event(
                    "saved",
                    image.name,
                    digest=target.digest,
                    media_type=target.media_type,
                    total=target.size,
                )
            )
        for platform, name in dst.unpacks:
            sn_name = name or self.config.default_snapshotter
            for image in imported:
                manifest = await self._manifest_for(image.target, platform)
                if manifest is None:
                    continue
                await unpack(
                    self.services.content_store(),
                    self.services.snapshot_service(sn_name),
                    self.services.diff_service(),
                    manifest,
                    snapshotter_name=sn_name,
                )
        emit(Event("Completed import"))

    async def _manifest_for(self, target: Descriptor, platform: Platform) -> Descriptor | None:
        """The manifest of ``target`` for ``platform`` (``None`` when it has none)."""
        from pycontainerd.remotes.imagewalk import children

        desc = target
        for _ in range(8):
            if mt.is_manifest(desc.media_type):
                return desc
            if not mt.is_index(desc.media_type):
                return None
            kids = await children(self.services.content_store(), desc)
            pick = next(
                (
                    k
                    for k in kids
                    if (mt.is_manifest(k.media_type) or mt.is_index(k.media_type))
                    and (k.platform is None or platforms.matches(platform, k.platform))
                ),
                None,
            )
            if pick is None:
                return None
            try:
                await self.services.content_store().info(pick.digest)
            except NotFoundError:
                return None
            desc = pick
        return None


SCHEMA1 = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
    }
)


def _prefixed(exc: Exception, prefix: str) -> Exception:
    """``exc`` again, of the same errdefs kind, with ``prefix`` before its message."""
    from pycontainerd.core.errdefs import ContainerdError

    if isinstance(exc, ContainerdError):
        try:
            return type(exc)(prefix + exc.message)
        except TypeError:
            return exc
    return exc


class _StreamOut:
    """A file-like ``write`` into a byte stream, for the archive writer's worker threads.

    Each write waits (in its thread) until the stream has taken the data, so
    the export goes at the pace of the client's window.
    """

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> int:
        asyncio.run_coroutine_threadsafe(self._sender.write(data), self._loop).result()
        return len(data)


class _StreamIn:
    """A file-like ``read`` from a byte stream, for the archive reader's worker threads."""

    def __init__(self, receiver: Receiver, first: bytes) -> None:
        self._receiver = receiver
        self._buffer = first
        self._loop = asyncio.get_running_loop()

    def read(self, n: int = -1) -> bytes:
        if self._buffer:
            if n < 0 or n >= len(self._buffer):
                data, self._buffer = self._buffer, b""
            else:
                data, self._buffer = self._buffer[:n], self._buffer[n:]
            return data
        return asyncio.run_coroutine_threadsafe(self._receiver.read(n), self._loop).result()


async def _log_dump(data: bytes) -> None:
    log.info("HTTP debug:\n%s", data.decode("utf-8", "replace"))


async def _trace_dump(data: bytes) -> None:
    first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    log.debug("HTTP trace: %s", first)


def _credentials(reg: Registry) -> Callable[[str], Any]:
    """Ask the client for a host's credentials over the registry's auth stream."""
    lock = asyncio.Lock()
    stream = reg.auth
    assert stream is not None  # noqa: S101 - checked by the caller

    async def ask(host: str) -> tuple[str, str] | None:
        async with lock:
            request = registry_pb2.AuthRequest(host=host, reference=reg.reference)
            try:
                await stream.send(typeurl.pack(request))
                answer = typeurl.unpack_as(await stream.recv(), registry_pb2.AuthResponse)
            except StreamClosedError:
                return None
        if not answer.secret and not answer.username:
            return None  # containerd 2.x's ctr answers empty credentials when it has none
        if answer.authType == registry_pb2.CREDENTIALS:
            return answer.username, answer.secret
        if answer.authType == registry_pb2.REFRESH:
            return "", answer.secret
        # HEADER: containerd 2.1 keeps the secret as a header value but its
        # credentials function hands the resolver only username and secret of
        # the other kinds, so such an answer pulls anonymously there too
        return None

    return ask
