"""Exporting images as an OCI image layout tar (containerd's ``Export``).

The archive holds ``oci-layout``, ``index.json`` (one entry per exported
image: its target descriptor annotated with ``io.containerd.image.name`` and
``org.opencontainers.image.ref.name``), every blob under
``blobs/<algorithm>/<hex>`` and, unless skipped, a Docker ``manifest.json``
naming one manifest per image (for ``docker load``). Entries are sorted by
name, owned by root, dated at the epoch, in USTAR format: exporting the
same images twice gives the same bytes, the same bytes as containerd.

For an index, only the manifests of the requested platforms (the host's
by default) are exported, or every manifest with ``all_platforms``; the
Docker manifest names the best match.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final, Protocol

from pycontainerd.core import content, digests, platforms
from pycontainerd.core.errdefs import DataLossError, InvalidArgumentError, NotFoundError
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.archive import refs
from pycontainerd.remotes.archive.importer import OCI_LAYOUT_VERSION, children, go_json
from pycontainerd.remotes.unpack import parse_json

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.types import Descriptor
    from pycontainerd.remotes.services import ImageServices

CHUNK: Final = 1 << 20
_BLOCK: Final = 512


def is_non_distributable(media_type: str) -> bool:
    """Foreign and non-distributable layers (kept out with ``skip_non_distributable``)."""
    base = mt.base(media_type)
    return base.startswith(
        ("application/vnd.oci.image.layer.nondistributable.", mt.DOCKER_FOREIGN_LAYER)
    )


@dataclass(slots=True, kw_only=True)
class ExportOptions:
    """What :func:`export_images` writes.

    Attributes:
        platforms: the platforms wanted from an index, best first (default:
            exactly the host's).
        all_platforms: every manifest of an index goes into the archive.
        skip_manifest_json: leave out Docker's ``manifest.json``.
        skip_non_distributable: leave out foreign/non-distributable layers.
    """

    platforms: Sequence[Platform] = field(default_factory=tuple)
    all_platforms: bool = False
    skip_manifest_json: bool = False
    skip_non_distributable: bool = False


@dataclass(slots=True)
class _Record:
    name: str
    size: int
    mode: int
    directory: bool = False
    data: bytes | None = None
    digest: str = ""


@dataclass(slots=True)
class _DockerEntry:
    manifest: Descriptor
    names: list[str] = field(default_factory=list)


def _header(record: _Record) -> bytes:
    info = tarfile.TarInfo(record.name)
    info.mode = record.mode
    info.size = 0 if record.directory else record.size
    info.type = tarfile.DIRTYPE if record.directory else tarfile.REGTYPE
    info.mtime = 0
    info.uname = info.gname = ""
    buf = bytearray(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
    # Go's archive/tar fills devmajor/devminor with zeros for every entry; Python
    # leaves them empty unless the entry is a device. Match Go, then re-checksum.
    buf[329:345] = b"0000000\x000000000\x00"
    buf[148:156] = b" " * 8
    buf[148:156] = b"%06o\x00 " % sum(buf[:_BLOCK])
    return bytes(buf)


class _Exporter:
    def __init__(self, store: content.Provider, opts: ExportOptions) -> None:
        self.store = store
        self.opts = opts
        self.records: list[_Record] = []
        self.algorithms: set[str] = set()
        self.docker: dict[str, _DockerEntry] = {}
        self.resolved: dict[str, str] = {}
        wanted = list(opts.platforms) or [platforms.host()]
        self.wanted = [platforms.normalize(p) for p in wanted]

    def match(self, p: Platform) -> bool:
        return any(platforms.matches(w, p) for w in self.wanted)

    def rank(self, d: Descriptor) -> int:
        if d.platform is None:
            return len(self.wanted)
        return next(
            (i for i, w in enumerate(self.wanted) if platforms.matches(w, d.platform)),
            len(self.wanted),
        )

    def blob(self, desc: Descriptor) -> None:
        dgst = digests.parse(desc.digest)
        self.algorithms.add(dgst.algorithm)
        if self.opts.skip_non_distributable and is_non_distributable(desc.media_type):
            return
        self.records.append(
            _Record(
                name=f"blobs/{dgst.algorithm}/{dgst.encoded}",
                size=desc.size,
                mode=0o444,
                digest=desc.digest,
            )
        )

    async def graph(self, desc: Descriptor) -> None:
        """``desc`` and everything under it (nested indexes unfiltered, as upstream)."""
        self.blob(desc)
        for child in await children(self.store, desc):
            await self.graph(child)

    async def add(self, target: Descriptor) -> None:
        if mt.is_manifest(target.media_type):
            entry = self.docker.get(target.digest)
            if entry is None:
                await self.graph(target)
                entry = self.docker[target.digest] = _DockerEntry(target)
            name = target.annotations.get(refs.IMAGE_NAME_ANNOTATION, "")
            if name:
                entry.names.append(name)
        elif mt.is_index(target.media_type):
            chosen = self.resolved.get(target.digest)
            if chosen is None:
                chosen = await self.index(target)
            name = target.annotations.get(refs.IMAGE_NAME_ANNOTATION, "")
            if chosen and name:
                self.docker[chosen].names.append(name)
        else:
            msg = f"only manifests may be exported: {target.media_type}"
            raise InvalidArgumentError(msg)

    async def index(self, target: Descriptor) -> str:
        self.blob(target)
        matching: list[Descriptor] = []
        for m in await children(self.store, target):
            if m.platform is None or self.match(m.platform):
                matching.append(m)
            elif not self.opts.all_platforms:
                continue
            await self.graph(m)
        if not matching:
            msg = "no manifest found for platform"
            raise NotFoundError(msg)
        matching.sort(key=self.rank)
        best = matching[0]
        self.docker[best.digest] = _DockerEntry(best)
        self.resolved[target.digest] = best.digest
        return best.digest

    async def docker_manifest(self) -> bytes:
        out: list[dict[str, object]] = []
        for entry in self.docker.values():
            raw = await content.read_blob(self.store, entry.manifest.digest)
            doc = parse_json(raw, entry.manifest)
            cfg = doc.get("config")
            layers = doc.get("layers") or []
            if not isinstance(cfg, dict) or not isinstance(layers, list):
                msg = f"invalid manifest {entry.manifest.digest!r}"
                raise InvalidArgumentError(msg)
            out.append(
                {
                    "Config": _blob_path(cfg.get("digest")),
                    "RepoTags": [refs.familiarize(n) for n in entry.names] or None,
                    "Layers": [
                        _blob_path(x.get("digest") if isinstance(x, dict) else None) for x in layers
                    ]
                    or None,
                }
            )
        return go_json(out)


def _blob_path(dgst: object) -> str:
    if not isinstance(dgst, str):
        msg = "invalid manifest: descriptor without a digest"
        raise InvalidArgumentError(msg)
    d = digests.parse(dgst)
    return f"blobs/{d.algorithm}/{d.encoded}"


def _small(name: str, data: bytes, mode: int) -> _Record:
    return _Record(name=name, size=len(data), mode=mode, data=data)


class Writer(Protocol):
    """Where an archive goes: a binary file, or anything with its ``write``.

    ``write`` is called from worker threads, one call at a time; a ``flush``,
    if there is one, is called at the end.
    """

    def write(self, data: bytes, /) -> object:
        """Take ``data`` (all of it) or raise."""
        ...


async def export_images(
    client: ImageServices,
    out: Writer,
    names: Sequence[str],
    options: ExportOptions | None = None,
) -> None:
    """Write the images ``names`` to ``out`` as an OCI layout tar.

    Raises:
        NotFoundError: an unknown image, a missing blob, no manifest for the platform.
        InvalidArgumentError: an image whose target is not a manifest or index.
        DataLossError: a blob in the store that does not match its digest.
    """
    opts = options or ExportOptions()
    store = client.content_store()
    images = client.image_store()
    targets: list[Descriptor] = []
    for name in names:
        image = await images.get(name)
        annotations = dict(image.target.annotations)
        annotations[refs.IMAGE_NAME_ANNOTATION] = name
        annotations[refs.OCI_REF_NAME_ANNOTATION] = refs.oci_ref_name(name)
        targets.append(replace(image.target, annotations=annotations))
    await write_archive(store, out, targets, opts)


async def write_archive(
    store: content.Provider,
    out: Writer,
    targets: Sequence[Descriptor],
    options: ExportOptions | None = None,
) -> None:
    """Write the descriptors ``targets`` and what they reference to ``out`` (see module)."""
    from pycontainerd.remotes.archive.importer import descriptor_json

    opts = options or ExportOptions()
    ex = _Exporter(store, opts)
    layout = json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION}, separators=(",", ":"))
    index = go_json({"schemaVersion": 2, "manifests": [descriptor_json(t) for t in targets]})
    ex.records += [_small("oci-layout", layout.encode(), 0o444), _small("index.json", index, 0o644)]
    for target in targets:
        await ex.add(target)
    if not opts.skip_manifest_json and ex.docker:
        ex.records.append(_small("manifest.json", await ex.docker_manifest(), 0o644))
    if ex.algorithms:
        ex.records.append(_Record(name="blobs/", size=0, mode=0o755, directory=True))
        ex.records += [
            _Record(name=f"blobs/{alg}/", size=0, mode=0o755, directory=True)
            for alg in sorted(ex.algorithms)
        ]
    await _write_tar(store, out, ex.records)


async def _write_tar(store: content.Provider, out: Writer, records: list[_Record]) -> None:
    write: Callable[[bytes], object] = out.write
    last = ""
    for record in sorted(records, key=lambda r: r.name):
        if record.name == last:
            continue
        last = record.name
        await asyncio.to_thread(write, _header(record))
        if record.directory:
            continue
        if record.data is not None:
            await asyncio.to_thread(write, record.data)
        else:
            await _copy_blob(store, record, write)
        pad = -record.size % _BLOCK
        if pad:
            await asyncio.to_thread(write, b"\0" * pad)
    await asyncio.to_thread(write, b"\0" * (2 * _BLOCK))
    flush = getattr(out, "flush", None)
    if flush is not None:
        await asyncio.to_thread(flush)


async def _copy_blob(
    store: content.Provider, record: _Record, write: Callable[[bytes], object]
) -> None:
    reader = await store.reader_at(record.digest)
    hasher = digests.hasher(digests.parse(record.digest).algorithm)
    copied = 0
    try:
        stream = getattr(reader, "stream", None)
        if stream is not None:
            async for chunk in stream(0, 0):
                hasher.update(chunk)
                copied += len(chunk)
                await asyncio.to_thread(write, chunk)
        else:
            while copied < record.size:
                chunk = await reader.read_at(copied, min(CHUNK, record.size - copied))
                if not chunk:
                    break
                hasher.update(chunk)
                copied += len(chunk)
                await asyncio.to_thread(write, chunk)
    finally:
        await reader.close()
    if copied != record.size:
        msg = f"unexpected copy size for {record.name}: {copied} != {record.size}"
        raise DataLossError(msg)
    if hasher.digest() != record.digest:
        msg = f"unexpected digest {hasher.digest()} copied for {record.name}"
        raise DataLossError(msg)
