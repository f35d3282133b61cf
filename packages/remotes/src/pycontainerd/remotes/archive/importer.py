"""Importing image archives: OCI image layouts and ``docker save`` tars (containerd's ``Import``).

The tar is read as a stream, once. Every regular file in it is written to
the content store through ``Content.Write`` under the ref ``tar-<path>``
(``oci-layout`` and ``manifest.json`` are parsed instead), so the caller must
hold a lease: :func:`import_images` takes one. A file under
``blobs/<algorithm>/<hex>`` must hash to that digest, otherwise its ingest
is discarded and the import fails with ``DataLossError`` before any image
record is written. A blob the namespace has already is skipped, held by the
import's lease all the same (:func:`commit_holding`).

* With ``oci-layout`` the tar is an OCI image layout and ``index.json`` is
  the root.
* Otherwise ``manifest.json`` makes it a ``docker save`` archive (Docker
  1.1/1.2 formats): a Docker schema 2 manifest is written for each entry
  (config media type ``application/vnd.docker.container.image.v1+json``,
  layer media types from the layers' compression, reusing a compressed blob
  already labelled ``containerd.io/uncompressed=<layer digest>``, which the
  import's lease then holds: :func:`hold`), and an
  OCI index names each tag (``io.containerd.image.name`` with the normalised
  name, ``org.opencontainers.image.ref.name`` with its tag).

Paths are never used on the filesystem, but an entry that is absolute or
climbs out of the archive (``..``), and a link pointing outside it, are
refused with ``InvalidArgumentError``.

Then the index is walked: each index entry with a name (the annotations,
through ``ref_translator``) becomes an image, entries are filtered by
platform, parents get ``containerd.io/gc.ref.content.*`` labels naming their
children, and the images are updated or created.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import posixpath
import re
import tarfile
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, TypeVar, cast

from pycontainerd.core import content, digests, platforms
from pycontainerd.core.closing import finish_shielded
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    DataLossError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnimplementedError,
)
from pycontainerd.core.images import Image
from pycontainerd.core.jsonload import load_json
from pycontainerd.core.platforms import Platform
from pycontainerd.core.types import Descriptor
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.archive import refs
from pycontainerd.remotes.unpack import descriptor_from_json, parse_json

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pycontainerd.remotes.services import ImageServices

log = logging.getLogger(__name__)

_T = TypeVar("_T", dict[str, Any], list[Any])

CHUNK: Final = 1 << 20
OCI_LAYOUT_FILE: Final = "oci-layout"
OCI_LAYOUT_VERSION: Final = "1.0.0"
DOCKER_MANIFEST_FILE: Final = "manifest.json"
_BLOB_PATH: Final = re.compile(r"blobs/([a-z0-9+._-]+)/([a-zA-Z0-9=_-]+)")


# -- JSON as Go writes it ---------------------------------------------------------------


def go_json(value: object) -> bytes:
    """Compact JSON with Go's ``encoding/json`` escaping (same bytes, same digests)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode()


def platform_json(p: Platform) -> dict[str, object]:
    """An OCI platform object in the image-spec's field order."""
    out: dict[str, object] = {"architecture": p.architecture, "os": p.os}
    if p.os_version:
        out["os.version"] = p.os_version
    if p.os_features:
        out["os.features"] = list(p.os_features)
    if p.variant:
        out["variant"] = p.variant
    return out


def descriptor_json(d: Descriptor) -> dict[str, object]:
    """An OCI descriptor object in the image-spec's field order (empty fields left out)."""
    out: dict[str, object] = {}
    if d.media_type:
        out["mediaType"] = d.media_type
    out["digest"] = d.digest
    out["size"] = d.size
    if d.urls:
        out["urls"] = list(d.urls)
    if d.annotations:
        out["annotations"] = dict(sorted(d.annotations.items()))
    if d.platform is not None:
        out["platform"] = platform_json(d.platform)
    return out


# -- reading the tar ----------------------------------------------------------------------


def clean_member_name(name: str) -> str:
    """An archive path, cleaned like Go's ``path.Clean``.

    Raises:
        InvalidArgumentError: absolute, or leaving the archive through ``..``.
    """
    if name.startswith("/"):
        msg = f"archive entry {name!r}: absolute paths are not allowed"
        raise InvalidArgumentError(msg)
    cleaned = posixpath.normpath(name)
    if cleaned == ".." or cleaned.startswith("../"):
        msg = f"archive entry {name!r}: path escapes the archive"
        raise InvalidArgumentError(msg)
    return cleaned


def _link_target(member: tarfile.TarInfo, name: str) -> str:
    link = member.linkname
    if link.startswith("/"):
        msg = f"archive entry {member.name!r}: link to absolute path {link!r} is not allowed"
        raise InvalidArgumentError(msg)
    joined = posixpath.join(posixpath.dirname(name), link) if member.issym() else link
    target = posixpath.normpath(joined)
    if target == ".." or target.startswith("../"):
        msg = f"archive entry {member.name!r}: link target {link!r} escapes the archive"
        raise InvalidArgumentError(msg)
    return target


@dataclass(slots=True)
class _Contents:
    layout: dict[str, Any] | None = None
    docker: list[Any] | None = None
    blobs: dict[str, Descriptor] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)


async def _read_small(f: IO[bytes], member: tarfile.TarInfo) -> bytes:
    if member.size > mt.MAX_MANIFEST_SIZE:
        msg = (
            f"archive entry {member.name!r}: size {member.size} exceeds the limit of "
            f"{mt.MAX_MANIFEST_SIZE} bytes"
        )
        raise OutOfRangeError(msg)
    return await asyncio.to_thread(f.read, member.size)


def _json_entry(data: bytes, member: tarfile.TarInfo, kind: type[_T]) -> _T:
    try:
        return load_json(data, kind)
    except ValueError as exc:
        msg = f"archive entry {member.name!r}: {exc}"
        raise InvalidArgumentError(msg) from None


async def _ingest(store: content.Store, f: IO[bytes], name: str, size: int) -> Descriptor:
    """Write one archive file to the store; return its digest and size.

    Raises:
        DataLossError: a ``blobs/<alg>/<hex>`` file whose bytes hash differently.
    """
    expected = ""
    m = _BLOB_PATH.fullmatch(name)
    if m and digests.is_valid(f"{m.group(1)}:{m.group(2)}"):
        expected = f"{m.group(1)}:{m.group(2)}"
    ref = f"tar-{name}"
    try:
        writer = await store.writer(ref, total=size, expected=expected)
    except AlreadyExistsError:
        return Descriptor(digest=expected, size=size)
    committed = False
    try:
        await writer.truncate(0)
        hasher = digests.hasher(digests.parse(expected).algorithm if expected else "sha256")
        left = size
        while left > 0:
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:
                msg = f"archive entry {name!r}: unexpected end of archive"
                raise DataLossError(msg)
            hasher.update(chunk)
            await writer.write(chunk)
            left -= len(chunk)
        dgst = str(hasher.digest())
        if expected and dgst != expected:
            msg = f"archive blob {name!r}: digest mismatch: content is {dgst}, expected {expected}"
            raise DataLossError(msg)
        await commit_holding(writer, size, dgst)
        committed = True
        return Descriptor(digest=dgst, size=size)
    finally:
        await writer.close()
        if not committed:
            with contextlib.suppress(NotFoundError):
                await finish_shielded(store.abort(ref))


async def commit_holding(
    writer: content.Writer, size: int, dgst: str, *, labels: Mapping[str, str] | None = None
) -> None:
    """Commit ``writer`` (the bytes of ``dgst``); a blob the namespace has already is fine.

    The digest is not named on the commit, and the store's digest of what
    it got is compared here instead: containerd's Content service checks a
    digest named on COMMIT with a bare ``Info`` and answers AlreadyExists
    for a blob the namespace has without adding it to the call's lease. The
    importer relies on such a blob (it skips it), and one that nothing else
    references (an earlier import's ``index.json``) could then be collected
    before the import's labels and images name it. Unnamed, the commit goes
    through the metadata store, which adds an existing blob to the lease
    before it answers AlreadyExists (containerd's and ours). A writer opened
    with an expected digest is still checked against it by the store.

    Raises:
        DataLossError: the store committed the bytes under another digest.
    """
    try:
        got = await writer.commit(size, labels=labels)
    except AlreadyExistsError:
        return
    if got != dgst:
        msg = f"committed content is {got}, expected {dgst}"
        raise DataLossError(msg)


async def _entry(
    store: content.Store, tf: tarfile.TarFile, member: tarfile.TarInfo, out: _Contents
) -> None:
    name = clean_member_name(member.name)
    if member.issym() or member.islnk():
        out.links[name] = _link_target(member, name)
        return
    if not member.isreg():
        if not member.isdir():
            log.debug("archive entry %s: file type ignored", member.name)
        return
    f = tf.extractfile(member)
    if f is None:  # pragma: no cover - regular files always have data
        return
    if name == OCI_LAYOUT_FILE:
        out.layout = _json_entry(await _read_small(f, member), member, dict)
    elif name == DOCKER_MANIFEST_FILE:
        out.docker = _json_entry(await _read_small(f, member), member, list)
    else:
        out.blobs[name] = await _ingest(store, f, name, member.size)


class Reader(Protocol):
    """What an archive is read from: a binary file, or anything with its ``read``.

    ``read`` is called from worker threads, one call at a time, and may return
    fewer bytes than asked for (``b""`` only at the end).
    """

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes (all that is left when ``n`` is negative)."""
        ...


def _open_tar(stream: IO[bytes], decompress: bool) -> tarfile.TarFile:
    if decompress:
        return tarfile.open(fileobj=stream, mode="r|*")
    return tarfile.open(fileobj=stream, mode="r|")


async def _read_archive(
    store: content.Store, stream: Reader, *, decompress: bool = True
) -> _Contents:
    out = _Contents()
    # a compressed archive is read through (gzip, bzip2, xz) unless told it is a tar;
    # opening reads the first block, so it runs in a thread like every other read
    try:
        tf = await asyncio.to_thread(_open_tar, cast("IO[bytes]", stream), decompress)
    except tarfile.TarError as exc:
        msg = f"not a tar archive: {exc}"
        raise InvalidArgumentError(msg) from None
    with tf:
        while True:
            try:
                member = await asyncio.to_thread(tf.next)
            except tarfile.TarError as exc:
                msg = f"reading archive: {exc}"
                raise InvalidArgumentError(msg) from None
            if member is None:
                break
            await _entry(store, tf, member, out)
    return out


# -- the root index ------------------------------------------------------------------------


async def import_index(
    store: content.Store,
    stream: Reader,
    *,
    decompress: bool = True,
    compress_layers: bool = False,
) -> Descriptor:
    """Write the archive ``stream`` into ``store``; return the descriptor of its root index.

    Call under a lease (blobs written here are not referenced yet).
    ``decompress=False`` takes the stream as a plain tar (upstream does so
    when the import names a media type). ``compress_layers`` gzips the
    uncompressed layers of a ``docker save`` archive into new blobs
    (labelled ``containerd.io/uncompressed`` with the tar's digest) and names
    those in the manifests, as upstream's ``WithImportCompression``.

    Raises:
        InvalidArgumentError: not a tar, an unknown layout, a hostile path, bad JSON.
        UnimplementedError: an OCI layout version other than 1.0.0.
        DataLossError: a blob whose content does not match its name.
        NotFoundError: a config or layer named by ``manifest.json`` is missing.
    """
    found = await _read_archive(store, stream, decompress=decompress)
    if found.layout is not None:
        version = found.layout.get("imageLayoutVersion")
        if version != OCI_LAYOUT_VERSION:
            msg = f"unsupported OCI version {version}"
            raise UnimplementedError(msg)
        index = found.blobs.get("index.json")
        if index is None:
            msg = f"missing index.json in OCI layout {OCI_LAYOUT_VERSION}"
            raise InvalidArgumentError(msg)
        return replace(index, media_type=mt.OCI_INDEX)
    if found.docker is None:
        msg = "unrecognized image format: neither oci-layout nor manifest.json in the archive"
        raise InvalidArgumentError(msg)
    for name, target in found.links.items():
        if target not in found.blobs:
            msg = f"no target for symlink layer from {name!r} to {target!r}"
            raise NotFoundError(msg)
        found.blobs[name] = found.blobs[target]
    return await _docker_index(store, found, compress_layers=compress_layers)


def _docker_entry(raw: object) -> tuple[str, list[str], list[str]]:
    if not isinstance(raw, dict):
        msg = "manifest.json: an entry is not an object"
        raise InvalidArgumentError(msg)
    config, tags, layers = raw.get("Config"), raw.get("RepoTags") or [], raw.get("Layers") or []
    if (
        not isinstance(config, str)
        or not isinstance(tags, list)
        or not isinstance(layers, list)
        or not all(isinstance(x, str) for x in [*tags, *layers])
    ):
        msg = "manifest.json: Config must be a string, RepoTags and Layers lists of strings"
        raise InvalidArgumentError(msg)
    return config, [str(t) for t in tags], [str(x) for x in layers]


def _lookup(blobs: Mapping[str, Descriptor], path: str, what: str) -> Descriptor:
    desc = blobs.get(clean_member_name(path))
    if desc is None:
        msg = f"{what} {path!r} not found in the archive"
        raise NotFoundError(msg)
    return desc


async def _docker_index(
    store: content.Store, found: _Contents, *, compress_layers: bool = False
) -> Descriptor:
    entries: list[dict[str, object]] = []
    for raw in found.docker or []:
        config_path, tags, layer_paths = _docker_entry(raw)
        config = replace(
            _lookup(found.blobs, config_path, "image config"), media_type=mt.DOCKER_CONFIG
        )
        layers = await _resolve_layers(
            store, [_lookup(found.blobs, p, "layer") for p in layer_paths], compress=compress_layers
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.DOCKER_MANIFEST,
            "config": descriptor_json(config),
            "layers": [descriptor_json(x) for x in layers],
        }
        desc = await write_json(store, manifest, mt.DOCKER_MANIFEST)
        cfg = parse_json(await content.read_blob(store, config.digest), config)
        desc = replace(desc, platform=_config_platform(cfg))
        if not tags:
            entries.append(descriptor_json(desc))
        for tag in tags:
            name = refs.normalize(tag)
            annotations = {
                refs.IMAGE_NAME_ANNOTATION: name,
                refs.OCI_REF_NAME_ANNOTATION: refs.oci_ref_name(name),
            }
            entries.append(descriptor_json(replace(desc, annotations=annotations)))
    index = {"schemaVersion": 2, "manifests": entries}
    return await write_json(store, index, mt.OCI_INDEX)


def _config_platform(cfg: Mapping[str, object]) -> Platform:
    return platforms.normalize(
        Platform(
            os=str(cfg.get("os") or ""),
            architecture=str(cfg.get("architecture") or ""),
            variant=str(cfg.get("variant") or ""),
        )
    )


async def write_json(store: content.Store, doc: object, media_type: str) -> Descriptor:
    """Write ``doc`` as Go-style JSON under ``manifest-<digest>``; return its descriptor."""
    data = go_json(doc)
    desc = Descriptor(media_type=media_type, digest=str(digests.digest_of(data)), size=len(data))
    await write_bytes(store, f"manifest-{desc.digest}", data, desc)
    return desc


async def write_bytes(store: content.Store, ref: str, data: bytes, desc: Descriptor) -> None:
    """Put ``data`` (the blob ``desc``) into the store; nothing happens if it exists."""
    try:
        writer = await store.writer(ref, total=desc.size, expected=desc.digest)
    except AlreadyExistsError:
        return
    committed = False
    try:
        await writer.truncate(0)
        await writer.write(data)
        await commit_holding(writer, desc.size, desc.digest)
        committed = True
    finally:
        await writer.close()
        if not committed:
            with contextlib.suppress(NotFoundError):
                await store.abort(ref)


async def hold(store: content.Store, desc: Descriptor) -> bool:
    """Whether the store has the blob ``desc``; if so the current lease now holds it.

    For a blob the import did not write but will name (a compressed layer
    found by its label): until the manifest's labels reference it, nothing
    may, and the collector could take it. A writer opened with its digest
    is how containerd's metadata store (and ours) adds an existing blob to
    the caller's lease; it answers AlreadyExists. A writer that opens
    instead (the blob is gone) is given up at once.
    """
    ref = f"hold-{desc.digest}"
    try:
        writer = await store.writer(ref, total=desc.size, expected=desc.digest)
    except AlreadyExistsError:
        return True
    await writer.close()
    with contextlib.suppress(NotFoundError):
        await finish_shielded(store.abort(ref))
    return False


_GZIP_MAGIC: Final = b"\x1f\x8b"
_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"


async def _layer_media_type(store: content.Provider, desc: Descriptor) -> str:
    reader = await store.reader_at(desc.digest)
    try:
        head = await reader.read_at(0, 4)
    finally:
        await reader.close()
    if head.startswith(_GZIP_MAGIC):
        return mt.DOCKER_LAYER_GZIP
    if head.startswith(_ZSTD_MAGIC):
        return mt.DOCKER_LAYER_ZSTD
    return mt.DOCKER_LAYER


async def _resolve_layers(
    store: content.Store, layers: Sequence[Descriptor], *, compress: bool = False
) -> list[Descriptor]:
    """Media types for the layers; a compressed blob already in the store replaces a tar.

    With ``compress``, a tar that has no compressed blob yet gets one (gzip).
    """
    out = list(layers)
    if not out:
        return out
    filters = [f'labels."{mt.UNCOMPRESSED_LABEL}"=={d.digest}' for d in out]
    compressed: dict[str, Descriptor] = {}
    async for info in store.walk(*filters):
        uncompressed = info.labels.get(mt.UNCOMPRESSED_LABEL, "")
        if uncompressed and uncompressed not in compressed:
            compressed[uncompressed] = Descriptor(digest=info.digest, size=info.size)
    for i, desc in enumerate(out):
        use = compressed.get(desc.digest)
        if use is None or not await hold(store, use):
            use = desc  # the archive's own tar (gone since the walk: collected)
        media_type = await _layer_media_type(store, use)
        if compress and media_type == mt.DOCKER_LAYER:
            use = await compress_blob(store, use)
            media_type = mt.DOCKER_LAYER_GZIP
        out[i] = replace(use, media_type=media_type)
    return out


#: gzip level of :func:`compress_blob` (Go's ``gzip.DefaultCompression``).
GZIP_LEVEL: Final = 6


async def compress_blob(store: content.Store, desc: Descriptor) -> Descriptor:
    """Gzip the blob ``desc`` into a new blob labelled ``containerd.io/uncompressed``.

    Written under the ref ``compress-blob-<algorithm>-<hex>`` (upstream's);
    the new blob's digest is returned (an existing one is reused). The bytes
    differ from containerd's own compression (Go's deflate is not zlib's),
    so the digest does too.
    """
    import zlib

    algorithm, _, encoded = desc.digest.partition(":")
    ref = f"compress-blob-{algorithm}-{encoded}"
    labels = {mt.UNCOMPRESSED_LABEL: desc.digest}
    reader = await store.reader_at(desc.digest)
    writer = await store.writer(ref)
    committed = False
    try:
        await writer.truncate(0)
        deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: a gzip wrapper
        size = 0
        async for chunk in content.read_chunks(reader, CHUNK):
            out = await asyncio.to_thread(deflate.compress, chunk)
            if out:
                await writer.write(out)
                size += len(out)
        tail = deflate.flush()
        await writer.write(tail)
        size += len(tail)
        dgst = writer.digest()
        await commit_holding(writer, size, dgst, labels=labels)
        committed = True
    finally:
        await reader.close()
        await writer.close()
        if not committed:
            with contextlib.suppress(NotFoundError):
                await finish_shielded(store.abort(ref))
    return Descriptor(media_type=mt.DOCKER_LAYER_GZIP, digest=dgst, size=size)


# -- images ----------------------------------------------------------------------------------


def image_name(annotations: Mapping[str, str], translate: Callable[[str], str]) -> str:
    """An index entry's image name: the containerd annotation, else the translated OCI ref."""
    name = annotations.get(refs.IMAGE_NAME_ANNOTATION, "")
    if name:
        return name
    ref = annotations.get(refs.OCI_REF_NAME_ANNOTATION, "")
    return translate(ref) if ref else ""


def child_gc_labels(children: Sequence[Descriptor]) -> dict[str, str]:
    """``containerd.io/gc.ref.content.*`` labels naming ``children`` (upstream's numbering)."""
    counts: dict[str, int] = {}
    out: dict[str, str] = {}
    for child in children:
        key = mt.child_label_prefix(child.media_type)
        i = counts.get(key, 0)
        counts[key] = i + 1
        if i > 0 or key.endswith("."):
            key = f"{key}{i}"
        out[key] = child.digest
    return out


async def children(store: content.Provider, desc: Descriptor) -> list[Descriptor]:
    """What ``desc`` references: an index's manifests, a manifest's config and layers."""
    if not (mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type)):
        return []
    if desc.size > mt.MAX_MANIFEST_SIZE:
        msg = f"{desc.digest}: size {desc.size} exceeds the limit of {mt.MAX_MANIFEST_SIZE} bytes"
        raise OutOfRangeError(msg)
    doc = parse_json(await content.read_blob(store, desc.digest), desc)
    if mt.is_index(desc.media_type):
        raw = doc.get("manifests") or []
        if not isinstance(raw, list):
            msg = f"index {desc.digest}: manifests is not a list"
            raise InvalidArgumentError(msg)
        return [descriptor_from_json(x, desc.digest) for x in raw]
    layers = doc.get("layers") or []
    if not isinstance(layers, list):
        msg = f"manifest {desc.digest}: layers is not a list"
        raise InvalidArgumentError(msg)
    config = descriptor_from_json(doc.get("config"), desc.digest)
    return [config, *(descriptor_from_json(x, desc.digest) for x in layers)]


def host_matcher() -> Callable[[Platform], bool]:
    """The default: the host platform and the ones it can run (containerd's ``Default``)."""
    host = platforms.host()
    return lambda p: platforms.only(host, p)


def strict_matcher(want: Platform) -> Callable[[Platform], bool]:
    """Exactly ``want`` (containerd's ``OnlyStrict``)."""
    return lambda p: platforms.matches(want, p)


@dataclass(slots=True, kw_only=True)
class ImportOptions:
    """How :func:`import_images` names and filters what it imports.

    Attributes:
        ref_translator: turns an ``org.opencontainers.image.ref.name`` into an
            image name; ``""`` drops it (:func:`refs.add_ref_prefix`, ...).
        digest_ref: names an extra image after each entry's digest.
        skip_digest_for_named: no digest image for entries that have a name.
        index_name: also record the whole index under this name.
        platform: which manifests of an index to keep (default: the host's).
        all_platforms: keep every manifest.
        discard_layers: no ``gc.ref.content.l.*`` labels on manifests, so the
            collector may drop layers once they are unpacked.
        decompress: read a compressed archive through (else: a plain tar).
        compress_layers: gzip a ``docker save`` archive's uncompressed layers.
    """

    ref_translator: Callable[[str], str] = field(default=lambda ref: ref)
    digest_ref: Callable[[str], str] | None = None
    skip_digest_for_named: bool = False
    index_name: str = ""
    platform: Callable[[Platform], bool] | None = None
    all_platforms: bool = False
    discard_layers: bool = False
    decompress: bool = True
    compress_layers: bool = False


def _named(entries: Sequence[Descriptor], opts: ImportOptions) -> list[Image]:
    """The images the root index's ``entries`` become."""
    out: list[Image] = []
    for m in entries:
        name = image_name(m.annotations, opts.ref_translator)
        if name:
            out.append(Image(name=name, target=m))
        if opts.skip_digest_for_named and name:
            continue
        if opts.digest_ref is not None:
            ref = opts.digest_ref(m.digest)
            if ref:
                out.append(Image(name=ref, target=m))
    return out


async def import_images(
    client: ImageServices, stream: Reader, options: ImportOptions | None = None
) -> list[Image]:
    """Import the archive ``stream`` (containerd's ``Client.Import``); return the images.

    Runs under a lease of its own unless one is current, so nothing written
    survives an import that fails.

    Raises:
        as :func:`import_index`, plus ``NotFoundError`` for a blob an index or
        manifest names but the archive lacks.
    """
    opts = options or ImportOptions()
    async with client.with_lease():
        store = client.content_store()
        index = await import_index(
            store, stream, decompress=opts.decompress, compress_layers=opts.compress_layers
        )
        found: list[Image] = []
        if opts.index_name:
            found.append(Image(name=opts.index_name, target=index))
        match: Callable[[Platform], bool] | None = (
            None if opts.all_platforms else (opts.platform or host_matcher())
        )

        async def walk(desc: Descriptor) -> None:
            if desc.digest == index.digest:
                kids = await children(store, desc)
                found.extend(_named(kids, opts))
            else:
                try:
                    kids = await children(store, desc)
                except NotFoundError:
                    msg = f"{desc.media_type} {desc.digest} is not in the archive"
                    raise NotFoundError(msg) from None
            if match is not None:
                kids = [k for k in kids if k.platform is None or match(k.platform)]
            labelled = [k for k in kids if not (opts.discard_layers and mt.is_layer(k.media_type))]
            if labelled:
                labels = child_gc_labels(labelled)
                await store.update(
                    content.Info(digest=desc.digest, labels=labels),
                    *(f"labels.{k}" for k in labels),
                )
            for kid in kids:
                if not (mt.is_index(kid.media_type) or mt.is_manifest(kid.media_type)):
                    try:
                        await store.info(kid.digest)
                    except NotFoundError:
                        msg = f"{kid.media_type} {kid.digest} is not in the archive"
                        raise NotFoundError(msg) from None
                await walk(kid)

        await walk(index)
        images = client.image_store()
        out: list[Image] = []
        for image in found:
            try:
                out.append(await images.update(image, "target"))
            except NotFoundError:
                out.append(await images.create(image))
        return out
