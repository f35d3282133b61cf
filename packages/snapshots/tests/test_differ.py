"""The walking differ: diff two trees into a layer, apply it back, media types, whiteouts."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import zstandard

from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError, UnimplementedError
from pycontainerd.core.types import Descriptor, Mount
from pycontainerd.snapshots import fsutil
from pycontainerd.snapshots.differ import (
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_LAYER_GZIP,
    MEDIA_TYPE_LAYER_ZSTD,
    UNCOMPRESSED_LABEL,
    WalkingDiffer,
    compression_of,
)
from pycontainerd.snapshots.testing import make_tar, put_blob, tar_entry

if TYPE_CHECKING:
    from pycontainerd.core.content import Store
    from pycontainerd.snapshots.applyworker import ApplyWorkers

pytestmark = pytest.mark.usefixtures("needs_root")


def bind(path: Path, *, ro: bool = False) -> list[Mount]:
    return [Mount(type="bind", source=str(path), options=("ro" if ro else "rw", "rbind"))]


def snapshot_tree(root: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            xattrs = (
                tuple(
                    sorted(
                        (k, os.getxattr(path, k, follow_symlinks=False))
                        for k in os.listxattr(path, follow_symlinks=False)
                    )
                )
                if not stat.S_ISLNK(st.st_mode)
                else ()
            )
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            first = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else rel
            mtime = st.st_mtime_ns if not stat.S_ISDIR(st.st_mode) else None
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev, mtime, xattrs, content, first)
    return out


def as_diffed(tree: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """What a layer carries of a tree, as containerd writes it.

    Modification times to the second, ``security.capability`` alone among
    extended attributes.
    """
    out: dict[str, tuple[object, ...]] = {}
    for rel, (mode, uid, gid, rdev, exact, xattrs, content, first) in tree.items():
        mtime = exact - exact % 1_000_000_000 if isinstance(exact, int) else exact
        assert isinstance(xattrs, tuple)
        caps = tuple(x for x in xattrs if x[0] == "security.capability")
        out[rel] = (mode, uid, gid, rdev, mtime, caps, content, first)
    return out


def populate(root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_bytes(b"key=value\n")
    os.chown(root / "etc" / "conf", 1000, 1001)
    os.chmod(root / "etc" / "conf", 0o640)
    (root / "bin").mkdir(mode=0o755)
    (root / "bin" / "tool").write_bytes(os.urandom(300_000))
    os.chmod(root / "bin" / "tool", 0o4755)  # noqa: S103
    os.link(root / "bin" / "tool", root / "bin" / "tool-alias")
    os.symlink("tool", root / "bin" / "link")
    os.symlink("/absolute/target", root / "dangling")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.setxattr(root / "etc" / "conf", "user.note", b"hello")
    (root / "empty-dir").mkdir(mode=0o700)
    os.utime(root / "etc" / "conf", ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))


async def test_diff_then_apply_reproduces_tree(
    tmp_path: Path, store: Store, workers: ApplyWorkers | None
) -> None:
    lower, upper, out = tmp_path / "lower", tmp_path / "upper", tmp_path / "out"
    for d in (lower, upper, out):
        d.mkdir()
    populate(upper)
    differ = WalkingDiffer(store, temp_location=tmp_path / "tmpmounts", workers=workers)
    desc = await differ.compare(bind(lower), bind(upper), labels={"extra": "1"})
    assert desc.media_type == MEDIA_TYPE_LAYER_GZIP
    info = await store.info(desc.digest)
    assert info.size == desc.size
    assert info.labels["extra"] == "1"
    applied = await differ.apply(desc, bind(out))
    assert applied.media_type == MEDIA_TYPE_LAYER
    assert applied.digest == info.labels[UNCOMPRESSED_LABEL]
    assert as_diffed(snapshot_tree(out)) == as_diffed(snapshot_tree(upper))
    assert list((tmp_path / "tmpmounts").iterdir()) == []


async def test_diff_with_deletions_and_changes(
    tmp_path: Path, store: Store, workers: ApplyWorkers | None
) -> None:
    lower, upper, out = tmp_path / "lower", tmp_path / "upper", tmp_path / "out"
    lower.mkdir()
    populate(lower)
    (lower / "gone").write_bytes(b"x")
    (lower / "gone-dir" / "deep").mkdir(parents=True)
    fsutil.copy_tree(lower, upper)
    fsutil.copy_tree(lower, out)
    (upper / "gone").unlink()
    for p in sorted((upper / "gone-dir").rglob("*"), reverse=True):
        p.rmdir()
    (upper / "gone-dir").rmdir()
    (upper / "etc" / "conf").write_bytes(b"changed\n")
    (upper / "etc" / "new").write_bytes(b"new\n")
    differ = WalkingDiffer(store, temp_location=tmp_path / "tmpmounts", workers=workers)
    desc = await differ.compare(bind(lower), bind(upper), media_type=MEDIA_TYPE_LAYER)
    reader = await store.reader_at(desc.digest)
    data = await reader.read_at(0, reader.size)
    await reader.close()
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as tar:
        names = tar.getnames()
    assert ".wh.gone" in names
    assert ".wh.gone-dir" in names
    assert not any(n.startswith("gone-dir/") for n in names)
    assert "bin/tool" not in names  # unchanged files are not in the diff
    await differ.apply(desc, bind(out))
    assert as_diffed(snapshot_tree(out)) == as_diffed(snapshot_tree(upper))


@pytest.mark.parametrize(
    ("media_type", "compress"),
    [
        (MEDIA_TYPE_LAYER, lambda b: b),
        (MEDIA_TYPE_LAYER_GZIP, lambda b: gzip.compress(b, mtime=0)),
        (MEDIA_TYPE_LAYER_ZSTD, lambda b: zstandard.ZstdCompressor().compress(b)),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", gzip.compress),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", gzip.compress),
    ],
)
async def test_apply_media_types(
    tmp_path: Path, store: Store, media_type: str, compress: object, workers: ApplyWorkers | None
) -> None:
    raw = make_tar(tar_entry("d", tarfile.DIRTYPE, mode=0o755), tar_entry("d/f", data=b"hi"))
    blob = compress(raw)  # type: ignore[operator]
    dgst = await put_blob(store, blob)
    out = tmp_path / "out"
    out.mkdir()
    applied = await WalkingDiffer(store, workers=workers).apply(
        Descriptor(media_type=media_type, digest=dgst, size=len(blob)), bind(out), sync_fs=True
    )
    assert applied.digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert applied.size == len(raw)
    assert (out / "d" / "f").read_bytes() == b"hi"


async def test_apply_rejects_unknown_media_type_and_missing_blob(
    tmp_path: Path, store: Store
) -> None:
    differ = WalkingDiffer(store)
    with pytest.raises(UnimplementedError, match="no processor for media-type"):
        await differ.apply(
            Descriptor(media_type="text/plain", digest="sha256:" + "0" * 64), bind(tmp_path)
        )
    with pytest.raises(NotFoundError):
        await differ.apply(
            Descriptor(media_type=MEDIA_TYPE_LAYER, digest="sha256:" + "0" * 64), bind(tmp_path)
        )
    assert compression_of("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"


async def test_apply_corrupt_gzip_is_invalid_argument(
    tmp_path: Path, store: Store, workers: ApplyWorkers | None
) -> None:
    blob = gzip.compress(make_tar(tar_entry("f", data=b"x" * 1000)))[:-12] + b"garbage-tail"
    dgst = await put_blob(store, blob)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InvalidArgumentError, match="invalid compressed layer stream"):
        await WalkingDiffer(store, workers=workers).apply(
            Descriptor(media_type=MEDIA_TYPE_LAYER_GZIP, digest=dgst, size=len(blob)), bind(out)
        )


async def test_compare_rejects_unknown_media_type(tmp_path: Path, store: Store) -> None:
    with pytest.raises(InvalidArgumentError, match="unsupported diff media type"):
        await WalkingDiffer(store).compare(bind(tmp_path), bind(tmp_path), media_type="x/y")


def test_whiteouts_and_opaque_directories(tmp_path: Path) -> None:
    from io import BytesIO

    from pycontainerd.snapshots.archive import apply_tar

    root = tmp_path / "root"
    (root / "opaque").mkdir(parents=True)
    (root / "opaque" / "old1").write_bytes(b"")
    (root / "opaque" / "old-dir").mkdir()
    (root / "keep").write_bytes(b"")
    (root / "remove-me").write_bytes(b"")
    layer = make_tar(
        tar_entry("opaque", tarfile.DIRTYPE, mode=0o755),
        tar_entry("opaque/new-before", data=b"n"),
        tar_entry("opaque/.wh..wh..opq"),
        tar_entry("opaque/new-after", data=b"n"),
        tar_entry(".wh.remove-me"),
        tar_entry(".wh.never-existed"),
    )
    apply_tar(BytesIO(layer), root)
    assert sorted(p.name for p in (root / "opaque").iterdir()) == ["new-after", "new-before"]
    assert sorted(p.name for p in root.iterdir()) == ["keep", "opaque"]


async def test_diff_source_date_epoch_clamps_mtimes(tmp_path: Path, store: Store) -> None:
    from datetime import UTC, datetime

    lower, upper = tmp_path / "lower", tmp_path / "upper"
    lower.mkdir()
    upper.mkdir()
    (upper / "f").write_bytes(b"x")
    differ = WalkingDiffer(store)
    epoch = datetime(2001, 1, 1, tzinfo=UTC)
    a = await differ.compare(bind(lower), bind(upper), source_date_epoch=epoch, ref="one")
    os.utime(upper / "f", ns=(2_000_000_000_000_000_000, 2_000_000_000_000_000_000))
    b = await differ.compare(bind(lower), bind(upper), source_date_epoch=epoch, ref="two")
    assert a.digest == b.digest
