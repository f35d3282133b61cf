"""Installing an image's binaries into the daemon's managed ``opt`` directory (``ctr install``).

The image must be in the image store already (pulled or fetched); it need
not be unpacked. The manifest for the client's platform is chosen, each layer
is read from the content store, decompressed and only the tar entries whose
immediate parent directory is exactly ``bin`` (and ``lib`` with ``libs``)
are extracted under the install directory, as containerd's client-side
``Install`` does: ``bin/tool`` is installed, ``bin/sub/tool`` is not (the
directory entry ``bin/sub`` itself is created).

The install directory is ``path`` when given (it must exist), else what the
daemon's ``io.containerd.internal.v1.opt`` plugin exports as ``path``
(created when missing: pycontainerd's daemon makes it lazily).

Safety (unlike a plain tar extraction): names are normalised and nothing
outside ``<dir>/bin`` and ``<dir>/lib`` is ever written; a file replaces an
existing one (``replace``) by rename, so an existing symlink is replaced
rather than written through; hard links must point at an entry installed
alongside; devices, FIFOs and whiteouts are skipped; set-id bits are
dropped. Without ``replace`` an existing target is an error
(``cannot replace bin/<name> in <dir>``), as upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import posixpath
import tarfile
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, cast

from pycontainerd.core import content, platforms
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    NotFoundError,
    UnimplementedError,
)
from pycontainerd.remotes import mediatypes as mt
from pycontainerd.remotes.pull import select_manifests
from pycontainerd.remotes.unpack import manifest_parts

if TYPE_CHECKING:
    from pycontainerd.client.proxies import Services
    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.types import Descriptor

log = logging.getLogger(__name__)

OPT_PLUGIN_ID: Final = "opt"
_READ_CHUNK: Final = 1 << 20
_SPOOL_MAX: Final = 16 << 20


class ReplaceRefusedError(AlreadyExistsError):
    """A target exists and ``replace`` is off; ``str()`` is upstream's text, without a suffix."""

    def __str__(self) -> str:
        return self.message


class MissingDirectoryError(NotFoundError):
    """The install directory does not exist; ``str()`` is upstream's ``mkdir`` error text."""

    def __str__(self) -> str:
        return self.message


async def opt_path(client: Services) -> str:
    """The install directory the daemon's ``opt`` plugin exports.

    Raises:
        FailedPreconditionError: no (or more than one) ``opt`` plugin, or no path exported.
    """
    found = await client.introspection().plugins(f"id=={OPT_PLUGIN_ID}")
    if len(found) != 1:
        msg = "opt service not enabled"
        raise FailedPreconditionError(msg)
    path = found[0].exports.get("path", "")
    if not path:
        msg = "opt path not exported"
        raise FailedPreconditionError(msg)
    return path


async def _manifest_for(store: content.Store, target: Descriptor, want: Platform) -> Descriptor:
    desc = target
    for _ in range(8):  # nested indexes, bounded
        if mt.is_manifest(desc.media_type):
            return desc
        if not mt.is_index(desc.media_type):
            msg = f"unsupported image media type {desc.media_type!r}"
            raise UnimplementedError(msg)
        from pycontainerd.remotes.imagewalk import children

        chosen = select_manifests(await children(store, desc), [want], all_platforms=False)
        if not chosen:
            msg = f"no manifest for platform {platforms.format_platform(want)} in {desc.digest}"
            raise NotFoundError(msg)
        desc = chosen[0]
    msg = f"{target.digest}: indexes nested too deeply"
    raise FailedPreconditionError(msg)


def _target_name(name: str, libs: bool) -> str | None:
    """The normalised entry name if it is to be installed, else ``None``."""
    clean = posixpath.normpath("/" + name.lstrip("/")).lstrip("/")
    parent, base = posixpath.split(clean)
    if parent == "bin" or (libs and parent == "lib"):
        if base.startswith(".wh."):
            return None
        return clean
    return None


def _open_layer(fileobj: IO[bytes], media_type: str) -> IO[bytes]:
    kind = mt.compression(media_type)
    if kind == "gzip":
        return cast("IO[bytes]", gzip.GzipFile(fileobj=fileobj, mode="rb"))
    if kind == "zstd":
        try:
            import zstandard  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            msg = f"zstd layers need the zstandard package: {media_type}"
            raise UnimplementedError(msg) from None
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(fileobj)
        return reader
    return fileobj


class _Extractor:
    """Applies the filtered entries of one layer under ``root`` (runs in a thread)."""

    def __init__(self, root: Path, *, libs: bool, replace: bool) -> None:
        self.root = root
        self.libs = libs
        self.replace = replace
        self.installed: list[str] = []

    def _check_free(self, name: str, dest: Path) -> None:
        if not self.replace and (dest.exists() or dest.is_symlink()):
            msg = f"cannot replace {name} in {self.root}"
            raise ReplaceRefusedError(msg)

    def _put_file(self, dest: Path, src: IO[bytes], mode: int) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".install-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(_READ_CHUNK):
                    out.write(chunk)
            os.chmod(tmp, mode & 0o777)
            if dest.is_dir() and not dest.is_symlink():
                msg = f"cannot replace directory {dest} with a file"
                raise FailedPreconditionError(msg)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _put_link(self, dest: Path, target: str) -> None:
        tmp = dest.with_name(f".install-{os.getpid()}-{dest.name}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.replace(tmp, dest)

    def apply(self, stream: IO[bytes]) -> None:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = _target_name(member.name, self.libs)
                if name is None:
                    continue
                dest = self.root / name
                dest.parent.mkdir(mode=0o711, exist_ok=True)
                if member.isdir():
                    if not dest.is_dir():
                        self._check_free(name, dest)
                        dest.mkdir(mode=member.mode & 0o777 or 0o755)
                    continue
                if not (member.isreg() or member.issym() or member.islnk()):
                    log.debug("install: skipping special file %s", member.name)
                    continue
                self._check_free(name, dest)
                if member.isreg():
                    src = tar.extractfile(member)
                    if src is None:  # pragma: no cover - a regular file always has data
                        continue
                    self._put_file(dest, src, member.mode)
                elif member.issym():
                    self._put_link(dest, member.linkname)
                else:
                    link = _target_name(member.linkname, self.libs)
                    if link is None or not (self.root / link).is_file():
                        log.debug("install: skipping hard link %s -> %s", name, member.linkname)
                        continue
                    with (self.root / link).open("rb") as src_file:
                        mode = (self.root / link).stat().st_mode
                        self._put_file(dest, src_file, mode)
                self.installed.append(name)


async def _spool(store: content.Store, desc: Descriptor) -> IO[bytes]:
    """The blob ``desc`` in a temporary file (in memory while small)."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MAX)  # noqa: SIM115
    reader = await store.reader_at(desc.digest)
    try:
        async for data in content.read_chunks(reader, _READ_CHUNK):
            out.write(data)
    except BaseException:
        out.close()
        raise
    finally:
        await reader.close()
    out.seek(0)
    return out


async def install(
    client: Services,
    image_name: str,
    *,
    path: str | None = None,
    libs: bool = False,
    replace: bool = False,
    platform: Platform | None = None,
) -> list[str]:
    """Install ``bin/`` (and ``lib/``) of ``image_name``; return the installed names.

    Raises:
        NotFoundError: the image, its manifest for the platform or a blob is missing.
        FailedPreconditionError: no opt path.
        MissingDirectoryError: the install directory does not exist (a ``NotFoundError``).
        ReplaceRefusedError: a target exists and ``replace`` is false (an ``AlreadyExistsError``).
        UnimplementedError: a layer of a media type that cannot be read.
    """
    image = await client.image_store().get(image_name)
    if path:
        root = Path(path)
    else:
        # the daemon may create its managed directory lazily (pycontainerd's opt plugin does)
        root = Path(await opt_path(client))
        await asyncio.to_thread(root.mkdir, mode=0o711, parents=True, exist_ok=True)
    if not await asyncio.to_thread(root.is_dir):
        msg = f"mkdir {root / 'bin'}: no such file or directory"
        raise MissingDirectoryError(msg)
    store = client.content_store()
    manifest = await _manifest_for(store, image.target, platform or platforms.host())
    _config, layers = await manifest_parts(store, manifest)
    extractor = _Extractor(root, libs=libs, replace=replace)
    for layer in layers:
        spooled = await _spool(store, layer)
        try:
            stream = _open_layer(spooled, layer.media_type)
            await asyncio.to_thread(extractor.apply, stream)
        finally:
            spooled.close()
    return extractor.installed
