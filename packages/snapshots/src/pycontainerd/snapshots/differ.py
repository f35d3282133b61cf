"""The walking differ (``io.containerd.differ.v1.walking``): apply and create layers.

``apply`` reads a layer blob from the content store, decompresses it
(gzip, zstd or none, recognised by the media type and the stream's magic
bytes), extracts it into the mounts of an active snapshot with
:func:`pycontainerd.snapshots.archive.apply_tar`, and returns the
descriptor of the *uncompressed* stream, whose digest is the layer's diff ID.

``compare`` mounts two snapshots read-only, walks them, and writes the
difference as a new layer blob (gzip by default) into the content store,
labelled ``containerd.io/uncompressed=<diff ID>``.

Bytes move between the event loop (content store) and a worker thread
(filesystem) through a small bounded queue, so a layer is never held in
memory whole.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gzip
import io
import itertools
import os
import queue
import secrets
import threading
import time
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Final, Protocol, cast

from pycontainerd.core import digests
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    InvalidArgumentError,
    UnimplementedError,
)
from pycontainerd.core.types import Descriptor, Mount
from pycontainerd.core.userns import root_in_initial_namespace
from pycontainerd.snapshots import archive
from pycontainerd.snapshots.mount import read_only, with_temp_mounts

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from datetime import datetime

    from pycontainerd.core.content import ReaderAt, Store

__all__ = [
    "MEDIA_TYPE_LAYER",
    "MEDIA_TYPE_LAYER_GZIP",
    "MEDIA_TYPE_LAYER_ZSTD",
    "UNCOMPRESSED_LABEL",
    "LayerApplier",
    "WalkingDiffer",
    "compression_of",
]

MEDIA_TYPE_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
UNCOMPRESSED_LABEL: Final = "containerd.io/uncompressed"

_LAYER_BASES: Final = (
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.foreign.diff.tar",
)
_CHUNK: Final = 1 << 20
_GZIP_MAGIC: Final = b"\x1f\x8b"
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # a gzip header and trailer around deflate
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


def compression_of(media_type: str) -> str:
    """``""``, ``gzip`` or ``zstd`` for a layer media type.

    Raises:
        UnimplementedError: not a layer media type this differ can apply.
    """
    for base in _LAYER_BASES:
        if media_type == base:
            return ""
        rest = media_type.removeprefix(base)
        if rest != media_type and rest in {"+gzip", ".gzip"}:
            return "gzip"
        if rest != media_type and rest == "+zstd":
            return "zstd"
    msg = f"failed to get stream processor for {media_type}: no processor for media-type"
    raise UnimplementedError(msg)


# --- moving bytes between the loop and a worker thread -----------------------------------


class _AbandonedError(Exception):
    """The other side of a pipe went away."""


@dataclass
class _Pipe:
    """A bounded queue of byte chunks; ``b""`` ends the stream, an exception fails it."""

    q: queue.Queue[bytes | BaseException] = field(default_factory=lambda: queue.Queue(4))
    abandoned: threading.Event = field(default_factory=threading.Event)

    def put(self, item: bytes | BaseException) -> None:
        while True:
            if self.abandoned.is_set():
                raise _AbandonedError
            with contextlib.suppress(queue.Full):
                self.q.put(item, timeout=0.1)
                return

    def get(self) -> bytes | BaseException:
        while True:
            if self.abandoned.is_set():
                raise _AbandonedError
            with contextlib.suppress(queue.Empty):
                return self.q.get(timeout=0.1)


class _PipeWriter(io.RawIOBase):
    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._buf += b
        if len(self._buf) >= _CHUNK:
            self._pipe.put(bytes(self._buf))
            self._buf.clear()
        return len(b)

    def finish(self) -> None:
        if self._buf:
            self._pipe.put(bytes(self._buf))
            self._buf.clear()
        self._pipe.put(b"")


class _Hashing(io.RawIOBase):
    """Pass-through writer that digests and counts what goes through."""

    def __init__(self, inner: IO[bytes] | io.RawIOBase) -> None:
        self._inner = inner
        self.hasher = digests.hasher()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, b: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._inner.write(b)
        self.hasher.update(b)
        self.size += len(b)
        return len(b)


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Inflate a gzip stream of one or more members, at most :data:`_CHUNK` out at a time.

    zlib checks each member's CRC and length; a truncated stream, trailing
    bytes that are not another member, or corrupt data raise ``zlib.error``
    or :class:`InvalidArgumentError`.
    """
    inflater = zlib.decompressobj(_GZIP_WBITS)
    fed = False  # the current member has had input
    for chunk in chunks:
        data = chunk
        while data:
            fed = True
            out = inflater.decompress(data, _CHUNK)
            if out:
                yield out
            if inflater.eof:
                data = inflater.unused_data
                inflater, fed = zlib.decompressobj(_GZIP_WBITS), False
            else:
                data = inflater.unconsumed_tail
    if fed:
        if out := inflater.flush():
            yield out
        if not inflater.eof:
            msg = "invalid compressed layer stream: unexpected end of gzip data"
            raise InvalidArgumentError(msg)


class _ChunkSource:
    """A ``read(n)`` face over an iterator of chunks (for zstandard's stream reader)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks

    def read(self, size: int = -1) -> bytes:
        del size
        return next(self._chunks, b"")


def _unzstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    import zstandard

    source = cast("IO[bytes]", _ChunkSource(chunks))
    reader = zstandard.ZstdDecompressor().stream_reader(
        source, read_size=_CHUNK, read_across_frames=True
    )
    while out := reader.read(_CHUNK):
        yield out


def _decompressed(chunks: Iterator[bytes], compression: str) -> Iterator[bytes]:
    """The uncompressed stream, by media type or, failing that, by magic bytes."""
    first = next(chunks, b"")
    while len(first) < len(_ZSTD_MAGIC):
        more = next(chunks, b"")
        if not more:
            break
        first += more
    rest = itertools.chain([first], chunks)
    if compression == "gzip" or first.startswith(_GZIP_MAGIC):
        return _gunzip(rest)
    if compression == "zstd" or first.startswith(_ZSTD_MAGIC):
        return _unzstd(rest)
    return rest


def _fd_chunks(fd: int, size: int) -> Iterator[bytes]:
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def _pipe_chunks(pipe: _Pipe) -> Iterator[bytes]:
    while True:
        item = pipe.get()
        if isinstance(item, BaseException):
            raise item
        if not item:
            return
        yield item


def _syncfs(path: str) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    finally:
        os.close(fd)


#: A chunk at least this large starts the digest thread of an apply (smaller ones are
#: digested in line: handing them over would cost more than it saves).
_DIGEST_THREAD_FROM: Final = 256 * 1024
#: Chunks waiting for the digest thread of one apply (each up to :data:`_CHUNK`).
_DIGEST_DEPTH: Final = 3
#: At most this many applies digest in helper threads at once; one more waits for a
#: helper (made on demand; idle ones cost no CPU).
_DIGEST_THREADS: Final = 32
_digest_pool: tuple[int, ThreadPoolExecutor] | None = None
_digest_pool_lock = threading.Lock()


def _digest_executor() -> ThreadPoolExecutor:
    """The process's digest threads (made again in a forked child, whose threads are gone)."""
    global _digest_pool  # noqa: PLW0603 - one pool per process, made on first use
    pid = os.getpid()
    with _digest_pool_lock:
        if _digest_pool is None or _digest_pool[0] != pid:
            _digest_pool = (
                pid,
                ThreadPoolExecutor(_DIGEST_THREADS, thread_name_prefix="layer-digest"),
            )
        return _digest_pool[1]


class _Digester:
    """Digest a layer's uncompressed chunks, in a helper thread once they are large.

    SHA-256 is the largest single cost of applying a big layer and releases
    the GIL, so a helper thread digests while the caller's thread inflates
    and writes files. The helper only ever waits for the next chunk: the
    chunks reach the hasher in stream order, and :meth:`finish` (always
    called, also when the apply failed) returns once all of them are in.
    """

    def __init__(self, hasher: digests.Hasher) -> None:
        self.hasher = hasher
        self._q: queue.Queue[bytes | None] | None = None
        self._helper: Future[None] | None = None

    def _run(self, q: queue.Queue[bytes | None]) -> None:
        failed: BaseException | None = None
        while (chunk := q.get()) is not None:
            if failed is None:
                try:
                    self.hasher.update(chunk)
                except BaseException as exc:  # raised again by finish(), in the caller
                    failed = exc
            # after a failure keep taking chunks: the caller never blocks on a full queue
        if failed is not None:
            raise failed

    def feed(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """``chunks``, each handed to the hasher before it is passed on."""
        for chunk in chunks:
            if self._q is not None:
                self._q.put(chunk)
            elif len(chunk) >= _DIGEST_THREAD_FROM:
                self._q = queue.Queue(_DIGEST_DEPTH)
                self._helper = _digest_executor().submit(self._run, self._q)
                self._q.put(chunk)
            else:
                self.hasher.update(chunk)
            yield chunk

    def finish(self) -> None:
        """Wait until every chunk fed so far is digested."""
        if self._q is not None and self._helper is not None:
            self._q.put(None)
            self._helper.result()
            self._q = self._helper = None


def _apply_chunks(
    chunks: Iterator[bytes],
    compression: str,
    target: str,
    sync_fs: bool,
    overlay: archive.OverlayUpper | None = None,
) -> tuple[str, int]:
    """Decompress, digest and extract ``chunks`` into ``target``; ``(diff ID, size)``."""
    hasher = digests.hasher()
    digester = _Digester(hasher)
    try:
        try:
            stream = digester.feed(_decompressed(chunks, compression))
            archive.apply_chunks(stream, target, overlay=overlay)
            for _ in stream:  # the digest covers the tar's trailing padding too
                pass
        finally:
            digester.finish()
        if sync_fs:
            _syncfs(target)
        return str(hasher.digest()), hasher.size
    except Exception as exc:
        if isinstance(exc, ContainerdError | _AbandonedError) or (
            isinstance(exc, OSError) and exc.errno is not None
        ):
            raise
        msg = f"invalid compressed layer stream: {exc}"
        raise InvalidArgumentError(msg) from exc


def _apply_fd(
    fd: int,
    size: int,
    compression: str,
    target: str,
    *,
    sync_fs: bool,
    overlay: archive.OverlayUpper | None = None,
) -> tuple[str, int]:
    """:func:`_apply_chunks` of the local blob open as ``fd`` (a thread's or an applier's)."""
    return _apply_chunks(_fd_chunks(fd, size), compression, target, sync_fs, overlay)


def _apply_from_pipe(
    pipe: _Pipe,
    compression: str,
    target: str,
    sync_fs: bool,
    overlay: archive.OverlayUpper | None,
) -> tuple[str, int]:
    try:
        return _apply_chunks(_pipe_chunks(pipe), compression, target, sync_fs, overlay)
    finally:
        pipe.abandoned.set()


def _direct_target(mounts: Sequence[Mount]) -> str | None:
    """A single read-write bind mount needs no mounting: write to its source."""
    if len(mounts) == 1:
        m = mounts[0]
        if m.type in {"bind", "rbind"} and "ro" not in m.options and not m.target:
            return m.source
    return None


def _can_write_whiteouts() -> bool:
    """Whether this process may create the 0/0 devices of overlay whiteouts."""
    return root_in_initial_namespace()


def _overlay_upper(mounts: Sequence[Mount]) -> tuple[str, archive.OverlayUpper] | None:
    """The upper directory and layout of a single read-write overlay with plain paths."""
    if len(mounts) != 1 or mounts[0].type != "overlay" or mounts[0].target:
        return None
    upper = ""
    lowers: list[str] = []
    prefix = "trusted.overlay."
    for option in mounts[0].options:
        key, _, value = option.partition("=")
        if "\\" in value:
            return None  # escaped separators: leave it to the kernel
        if key == "upperdir":
            upper = value
        elif key == "lowerdir":
            lowers = value.split(":")
        elif key == "userxattr":
            prefix = "user.overlay."
        elif key == "ro":
            return None
    if not upper or not all(os.path.isabs(p) for p in [upper, *lowers]):
        return None
    return upper, archive.OverlayUpper(lowers=tuple(lowers), xattr_prefix=prefix)


class LayerApplier(Protocol):
    """Applies local blobs elsewhere than this process's threads (``applyworker.ApplyWorkers``)."""

    async def apply(
        self,
        fd: int,
        size: int,
        compression: str,
        target: str,
        *,
        sync_fs: bool = False,
        overlay: archive.OverlayUpper | None = None,
    ) -> tuple[str, int] | None:
        """:func:`_apply_fd`'s result for the blob open as ``fd``, with its errors.

        ``None``: not applied; the caller applies it in a thread.
        """
        ...

    async def aclose(self) -> None:
        """Stop applying (daemon stop)."""
        ...

    def expect(self) -> None:
        """Applies are coming (a pull has started): be ready for them at full speed."""
        ...


class WalkingDiffer:
    """Applies layers to mounts and computes layers from two mount sets.

    With ``workers``, a layer whose blob is a local file is extracted by an
    applier process (:mod:`pycontainerd.snapshots.applyworker`) instead of a
    thread of this one; :meth:`aclose` stops them. A blob that is not a local
    file is streamed into a thread either way.
    """

    def __init__(
        self,
        store: Store,
        *,
        temp_location: str | os.PathLike[str] | None = None,
        workers: LayerApplier | None = None,
    ) -> None:
        self._store = store
        self._temp = temp_location
        self.workers = workers

    async def aclose(self) -> None:
        """Stop the applier processes (daemon stop)."""
        if self.workers is not None:
            await self.workers.aclose()

    def expect_applies(self) -> None:
        """Layers are about to be applied (a pull has started): let the applier get ready."""
        if self.workers is not None:
            self.workers.expect()

    async def apply(
        self,
        desc: Descriptor,
        mounts: Sequence[Mount],
        *,
        sync_fs: bool = False,
        payloads: Mapping[str, object] | None = None,
    ) -> Descriptor:
        """Extract the layer ``desc`` into ``mounts``; return the uncompressed descriptor.

        Raises:
            UnimplementedError: unsupported media type.
            NotFoundError: the blob is not in the content store.
            InvalidArgumentError: a hostile or malformed archive.
        """
        del payloads  # stream processors are not supported; the walking differ ignores them
        compression = compression_of(desc.media_type)
        reader = await self._store.reader_at(desc.digest)
        try:
            direct = _direct_target(mounts)
            overlay = _overlay_upper(mounts) if _can_write_whiteouts() else None
            if direct is not None:
                dgst, size = await self._apply_into(reader, compression, direct, sync_fs)
            elif overlay is not None:
                # as containerd: write the layer into the upper directory, no mount
                dgst, size = await self._apply_into(
                    reader, compression, overlay[0], sync_fs, overlay[1]
                )
            else:
                async with with_temp_mounts(mounts, location=self._temp) as target:
                    dgst, size = await self._apply_into(reader, compression, str(target), sync_fs)
        finally:
            await reader.close()
        return Descriptor(media_type=MEDIA_TYPE_LAYER, digest=dgst, size=size)

    async def _apply_into(
        self,
        reader: ReaderAt,
        compression: str,
        target: str,
        sync_fs: bool,
        overlay: archive.OverlayUpper | None = None,
    ) -> tuple[str, int]:
        fileno = getattr(reader, "fileno", None)
        if callable(fileno):
            fd = cast("int", fileno())
            if self.workers is not None:
                # a local blob: the applier process reads, inflates, digests and extracts
                applied = await self.workers.apply(
                    fd, reader.size, compression, target, sync_fs=sync_fs, overlay=overlay
                )
                if applied is not None:
                    return applied
            # a local blob: one worker thread reads, inflates, digests and extracts
            return await asyncio.to_thread(
                _apply_fd, fd, reader.size, compression, target, sync_fs=sync_fs, overlay=overlay
            )
        pipe = _Pipe()

        async def feed() -> None:
            offset = 0
            try:
                while offset < reader.size:
                    chunk = await reader.read_at(offset, min(_CHUNK, reader.size - offset))
                    if not chunk:
                        break
                    offset += len(chunk)
                    await asyncio.to_thread(pipe.put, chunk)
                await asyncio.to_thread(pipe.put, b"")
            except _AbandonedError:
                return
            except BaseException as exc:
                with contextlib.suppress(_AbandonedError):
                    await asyncio.to_thread(pipe.put, exc)
                raise

        feeder = asyncio.ensure_future(feed())
        try:
            return await asyncio.to_thread(
                _apply_from_pipe, pipe, compression, target, sync_fs, overlay
            )
        finally:
            pipe.abandoned.set()
            with contextlib.suppress(Exception):
                await feeder

    async def compare(
        self,
        lower: Sequence[Mount],
        upper: Sequence[Mount],
        *,
        media_type: str = "",
        ref: str = "",
        labels: Mapping[str, str] | None = None,
        source_date_epoch: datetime | None = None,
    ) -> Descriptor:
        """Write the layer from ``lower`` to ``upper`` into the content store.

        Raises:
            InvalidArgumentError: unsupported output media type.
        """
        media_type = media_type or MEDIA_TYPE_LAYER_GZIP
        if media_type == MEDIA_TYPE_LAYER:
            compress: Callable[[IO[bytes]], IO[bytes]] | None = None
        elif media_type == MEDIA_TYPE_LAYER_GZIP:
            compress = _gzip_writer
        elif media_type == MEDIA_TYPE_LAYER_ZSTD:
            compress = _zstd_writer
        else:
            msg = f"unsupported diff media type: {media_type}"
            raise InvalidArgumentError(msg)
        epoch = int(source_date_epoch.timestamp()) if source_date_epoch is not None else None
        ref = ref or f"diff-{time.time_ns()}-{secrets.token_hex(4)}"
        async with (
            with_temp_mounts(read_only(lower), location=self._temp) as lower_dir,
            with_temp_mounts(read_only(upper), location=self._temp) as upper_dir,
        ):
            writer = await self._store.writer(ref)
            try:
                pipe = _Pipe()
                worker = asyncio.ensure_future(
                    asyncio.to_thread(
                        _diff_to_pipe, pipe, str(lower_dir), str(upper_dir), compress, epoch
                    )
                )
                size = 0
                try:
                    while True:
                        item = await asyncio.to_thread(pipe.get)
                        if isinstance(item, BaseException):
                            raise item
                        if not item:
                            break
                        await writer.write(item)
                        size += len(item)
                    uncompressed = await worker
                finally:
                    pipe.abandoned.set()
                    with contextlib.suppress(BaseException):
                        await worker
                all_labels = {**(labels or {}), UNCOMPRESSED_LABEL: uncompressed}
                try:
                    dgst = await writer.commit(size, "", labels=all_labels)
                except AlreadyExistsError:
                    dgst = writer.digest()
            finally:
                await writer.close()
        return Descriptor(media_type=media_type, digest=dgst, size=size)


def _gzip_writer(out: IO[bytes]) -> IO[bytes]:
    return cast("IO[bytes]", gzip.GzipFile(fileobj=out, mode="wb", mtime=0))


def _zstd_writer(out: IO[bytes]) -> IO[bytes]:
    import zstandard

    return cast("IO[bytes]", zstandard.ZstdCompressor().stream_writer(out, closefd=False))


def _diff_to_pipe(
    pipe: _Pipe,
    lower: str,
    upper: str,
    compress: Callable[[IO[bytes]], IO[bytes]] | None,
    epoch: int | None,
) -> str:
    sink = _PipeWriter(pipe)
    try:
        compressed = compress(cast("IO[bytes]", sink)) if compress is not None else None
        hashing = _Hashing(compressed if compressed is not None else sink)
        buffered = io.BufferedWriter(cast("io.RawIOBase", hashing), _CHUNK)
        archive.write_diff(buffered, lower, upper, source_date_epoch=epoch)
        buffered.flush()
        if compressed is not None:
            compressed.close()
        sink.finish()
        return str(hashing.hasher.digest())
    except _AbandonedError:
        raise
    except BaseException as exc:
        with contextlib.suppress(_AbandonedError):
            pipe.put(exc)
        raise
