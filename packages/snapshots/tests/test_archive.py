"""The streaming tar reader, overlay upper-directory applies and layer decompression."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import posixpath
import stat
import subprocess
import tarfile
import tracemalloc
from typing import TYPE_CHECKING

import pytest
import zstandard

from pycontainerd.core import digests
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.snapshots.archive import OverlayUpper, TarReader, apply_chunks
from pycontainerd.snapshots.differ import _apply_chunks, _decompressed, _Digester
from pycontainerd.snapshots.diffwrite import GoTarWriter
from pycontainerd.snapshots.diffwrite import _pax_record as _pax
from pycontainerd.snapshots.testing import make_tar, tar_entry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

D, S, L = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE


def _tar(fmt: int, *members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


def _read_all(data: bytes, chunk: int = 1 << 20) -> list[tuple[str, int, int, str, bytes]]:
    reader = TarReader(_chunks(data, chunk))
    out = []
    for entry in reader:
        body = b""
        if entry.isreg():
            r, w = os.pipe()
            try:
                reader.write_data(entry, w)
                os.close(w)
                body = os.read(r, 1 << 20)
            finally:
                os.close(r)
        out.append((entry.name, entry.uid, entry.mtime_ns, entry.linkname, body))
    return out


LONG = "d/" + "n" * 150 + "/file"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("chunk", [1, 511, 4096, 1 << 20])
def test_reader_names_links_and_numbers(fmt: int, chunk: int) -> None:
    big_uid = 3_000_000 if fmt != tarfile.USTAR_FORMAT else 1000
    info, data = tar_entry(LONG, data=b"long name\n")
    info.uid = big_uid  # GNU: base-256, PAX: a record
    link, _ = tar_entry("d/l", S, linkname="t" * (120 if fmt != tarfile.USTAR_FORMAT else 90))
    blob = _tar(fmt, (info, data), (link, None), tar_entry("empty", data=b""))
    entries = _read_all(blob, chunk)
    assert [e[0] for e in entries] == [LONG, "d/l", "empty"]
    assert entries[0][1] == big_uid
    assert entries[0][2] == 1_600_000_000 * 1_000_000_000
    assert entries[0][4] == b"long name\n"
    assert entries[1][3] == link.linkname


def test_reader_pax_times_xattrs_and_global_headers() -> None:
    info, data = tar_entry("f", data=b"x")
    info.pax_headers = {"mtime": "1600000000.25", "SCHILY.xattr.user.k": "v\u00e9"}
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"a": "b"}
    ) as t:
        t.addfile(info, io.BytesIO(data or b""))
    entry = next(iter(TarReader(iter([buf.getvalue()]))))
    assert entry.name == "f"
    assert entry.mtime_ns == 1_600_000_000_250_000_000
    assert entry.xattrs == {"user.k": "v\u00e9".encode()}


def test_reader_old_style_directory_and_empty_stream() -> None:
    info = tarfile.TarInfo("olddir/")
    info.type = tarfile.AREGTYPE
    entries = list(TarReader(iter([_tar(tarfile.USTAR_FORMAT, (info, None))])))
    assert [e.isdir() for e in entries] == [True]
    assert list(TarReader(iter([]))) == []


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda b: b[:100] + b"X" + b[101:], "bad header checksum"),
        (lambda b: b[:300], "unexpected end of data"),
        (lambda b: b[: 512 * 3 + 10], "unexpected end of data"),
    ],
)
def test_reader_refuses_malformed_archives(tmp_path: Path, mangle: object, match: str) -> None:
    blob = make_tar(tar_entry("f", data=b"y" * 2000))
    assert callable(mangle)
    with pytest.raises(InvalidArgumentError, match=match):
        apply_chunks([mangle(blob)], tmp_path)


@pytest.mark.parametrize("cut", ["no-end-blocks", "no-padding", "one-zero-block", "mid-padding"])
def test_reader_accepts_archives_without_end_blocks(tmp_path: Path, cut: str) -> None:
    data = b"z" * 700  # not a multiple of 512
    full = make_tar(tar_entry("a", data=b"first"), tar_entry("b", data=data))
    body = 512 * 2 + 512 + 512 * 2  # a: header + data, b: header + 2 data blocks
    cuts = {
        "no-end-blocks": body,
        "no-padding": body - (512 - 700 % 512),
        "one-zero-block": body + 512,
        "mid-padding": body - 100,
    }
    assert full[body - 512 + 700 % 512 : body] == bytes(512 - 700 % 512)
    apply_chunks(_chunks(full[: cuts[cut]], 300), tmp_path)
    assert (tmp_path / "b").read_bytes() == data
    assert (tmp_path / "a").read_bytes() == b"first"


@pytest.mark.parametrize(
    ("cut", "match"),
    [
        (512 * 2 + 100, "unexpected end of data in a header"),  # half of b's header
        (512 * 3 + 100, "unexpected end of data in 'b'"),  # b's data cut short
    ],
)
def test_reader_refuses_truncated_headers_and_data(tmp_path: Path, cut: int, match: str) -> None:
    full = make_tar(tar_entry("a", data=b"first"), tar_entry("b", data=b"z" * 700))
    with pytest.raises(InvalidArgumentError, match=match):
        apply_chunks([full[:cut]], tmp_path)


def test_reader_refuses_a_header_after_a_zero_block(tmp_path: Path) -> None:
    one = make_tar(tar_entry("a", data=b"1"))[:1024]
    two = make_tar(tar_entry("b", data=b"2"))[:1024]
    with pytest.raises(InvalidArgumentError, match="zero block followed by a header"):
        apply_chunks([one + bytes(512) + two], tmp_path)


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_gnu_sparse_files_are_expanded(tmp_path: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    size = 5 * 1024 * 1024 + 123
    with (src / "sparse").open("wb") as fh:
        fh.seek(1024 * 1024)
        fh.write(b"middle")
        fh.seek(size - 3)
        fh.write(b"end")
    (src / "after").write_bytes(b"next entry")
    blob = subprocess.run(
        ["tar", "--sparse", f"--format={fmt}", "-C", str(src), "-cf", "-", "sparse", "after"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        assert tar.getmember("sparse").issparse()
    out = tmp_path / "out"
    out.mkdir()
    apply_chunks(_chunks(blob, 4096), out)
    assert (out / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert (out / "sparse").stat().st_blocks * 512 < 1024 * 1024  # the holes stay holes
    assert (out / "after").read_bytes() == b"next entry"


@pytest.mark.parametrize("fragments", [b"0,100", b"150,10", b"0,5,2,5"])
def test_bad_sparse_maps_are_refused(tmp_path: Path, fragments: bytes) -> None:
    """More data than stored, data past the end, overlapping fragments."""
    out = io.BytesIO()
    tw = GoTarWriter(out)
    records = {
        b"GNU.sparse.major": b"0",
        b"GNU.sparse.minor": b"1",
        b"GNU.sparse.map": fragments,
        b"GNU.sparse.size": b"155",
    }
    tw.header(b"s", ord("0"), size=10, records=records)
    out.write(b"x" * 10)
    tw.pad(10)
    tw.close()
    with pytest.raises(InvalidArgumentError, match="sparse map"):
        apply_chunks([out.getvalue()], tmp_path)


def test_consecutive_pax_headers_replace_each_other() -> None:
    """Only the last extended header applies; thousands of big ones stay in bounded memory."""
    out = io.BytesIO()
    tw = GoTarWriter(out)
    value = b"v" * (512 * 1024)
    for i in range(300):
        key = b"SCHILY.xattr.user.k%d" % i
        tw._raw_file(b"PaxHeaders.0/f", b"".join([_pax(key, value)]))
    tw.header(b"f", ord("0"), mode=0o644, records={b"SCHILY.xattr.user.last": b"1"})
    tw.close()
    blob = out.getvalue()
    tracemalloc.start()
    try:
        entries = list(TarReader(_chunks(blob, 1 << 16)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [e.name for e in entries] == ["f"]
    assert entries[0].xattrs == {"user.last": b"1"}
    assert peak < 8 * 1024 * 1024, peak


def test_huge_pax_times_and_ids_and_the_root_entry(tmp_path: Path, needs_root: None) -> None:
    out = io.BytesIO()
    tw = GoTarWriter(out)
    tw.header(b"./", ord("5"), mode=0o700, uid=5, gid=5, records={b"SCHILY.xattr.user.r": b"1"})
    tw.header(
        b"f",
        ord("0"),
        mode=0o640,
        records={
            b"mtime": b"100000000000000",
            b"atime": b"-5.5",
            b"uid": b"%d" % ((1 << 32) + 7),
            b"gid": b"%d" % ((1 << 40) + 9),
        },
    )
    tw.header(b"g", ord("0"), records={b"mtime": b"-100"})
    tw.close()
    os.chmod(tmp_path, 0o751)  # noqa: S103
    before = os.stat(tmp_path)
    apply_chunks([out.getvalue()], tmp_path)
    st = os.stat(tmp_path / "f")
    assert (st.st_mtime_ns, st.st_atime_ns) == (0, 0)  # out of range: the epoch, as containerd
    assert (st.st_uid, st.st_gid) == (7, 9)  # what the kernel gets from Go: the low 32 bits
    assert os.stat(tmp_path / "g").st_mtime_ns == 0
    after = os.stat(tmp_path)
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid, 0)
    assert "user.r" not in os.listxattr(tmp_path)


def test_owner_and_mode_are_exact_in_a_setgid_directory(tmp_path: Path, needs_root: None) -> None:
    # what is made in a set-group-ID directory gets that group, and open/mkdir modes lose
    # the umask's bits: the entries must still end as the layer says
    del needs_root
    os.chown(tmp_path, 0, 1234)
    os.chmod(tmp_path, 0o2755)  # noqa: S103
    entries = []
    for name, kind, mode, owner in [
        ("f", tarfile.REGTYPE, 0o640, (0, 0)),
        ("open", tarfile.REGTYPE, 0o666, (0, 0)),
        ("setuid", tarfile.REGTYPE, 0o4755, (0, 0)),
        ("theirs", tarfile.REGTYPE, 0o600, (1000, 1001)),
        ("same", tarfile.REGTYPE, 0o644, (0, 1234)),
        ("d", D, 0o750, (0, 0)),
        ("d/inner", tarfile.REGTYPE, 0o644, (0, 0)),
        ("l", S, 0o777, (0, 0)),
    ]:
        info, data = tar_entry(name, kind, data=b"x" if kind == tarfile.REGTYPE else None)
        info.linkname = "f" if kind == S else ""
        info.mode, (info.uid, info.gid) = mode, owner
        entries.append((info, data))
    old = os.umask(0o022)
    try:
        apply_chunks([make_tar(*entries)], tmp_path)
    finally:
        os.umask(old)
    for info, _ in entries:
        st = os.lstat(tmp_path / info.name)
        assert (st.st_uid, st.st_gid) == (info.uid, info.gid), info.name
        if info.type != S:
            assert stat.S_IMODE(st.st_mode) == info.mode, info.name


@pytest.mark.parametrize(
    "order",
    [
        ["a/", "a/b/", "a/b/new", "a/.wh..wh..opq"],
        ["a/.wh..wh..opq", "a/", "a/b/", "a/b/new"],
        ["a/b/", "a/b/new", "a/.wh..wh..opq", "a/"],
        ["a/", "a/.wh..wh..opq", "a/b/new"],
    ],
)
def test_opaque_whiteouts_clear_the_whole_directory(tmp_path: Path, order: list[str]) -> None:
    lower = tmp_path / "root"
    (lower / "a" / "b" / "deeper").mkdir(parents=True)
    (lower / "a" / "b" / "old").write_bytes(b"old")
    (lower / "a" / "b" / "deeper" / "older").write_bytes(b"old")
    (lower / "a" / "sibling").write_bytes(b"old")
    entries = [
        tar_entry(n, D) if n.endswith("/") else tar_entry(n, data=b"new" if "new" in n else None)
        for n in order
    ]
    apply_chunks([make_tar(*entries)], lower)
    found = sorted(str(p.relative_to(lower)) for p in lower.rglob("*"))
    if "a/b/" in order or order.index("a/.wh..wh..opq") < order.index("a/b/new"):
        assert found == ["a", "a/b", "a/b/new"]
    else:  # a/b only made as the parent of a/b/new, before: containerd's walk removes it too
        assert found == ["a"]


def test_apply_replaces_files_in_a_cached_parent(tmp_path: Path) -> None:
    layer = make_tar(
        tar_entry("d", D, mode=0o755),
        tar_entry("d/a", data=b"1"),
        tar_entry("d/a", data=b"2"),
        tar_entry(".wh.d"),
        tar_entry("d/b", data=b"3"),
    )
    apply_chunks(_chunks(layer, 700), tmp_path)
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["b"]


# --- overlay upper directories -----------------------------------------------------------


@pytest.fixture
def layers(tmp_path: Path, needs_root: None) -> tuple[Path, Path]:
    del needs_root
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "gone").write_bytes(b"gone")
    (lower / "etc" / "keep").write_bytes(b"keep")
    (lower / "opaque").mkdir()
    (lower / "opaque" / "hidden").write_bytes(b"")
    (lower / "owned").mkdir(mode=0o750)
    os.chown(lower / "owned", 1000, 1001)
    os.setxattr(lower / "owned", "user.note", b"n")
    upper.mkdir()
    return lower, upper


def test_overlay_whiteouts_opaque_dirs_and_parents(layers: tuple[Path, Path]) -> None:
    lower, upper = layers
    layer = make_tar(
        tar_entry("etc/.wh.gone"),
        tar_entry("opaque", D, mode=0o755),
        tar_entry("opaque/.wh..wh..opq"),
        tar_entry("opaque/new", data=b"n"),
        tar_entry("owned/file", data=b"f"),
    )
    apply_chunks([layer], upper, overlay=OverlayUpper(lowers=(str(lower),)))
    gone = os.lstat(upper / "etc" / "gone")
    assert stat.S_ISCHR(gone.st_mode)
    assert gone.st_rdev == 0
    assert not (upper / "etc" / "keep").exists()
    assert os.getxattr(upper / "opaque", "trusted.overlay.opaque") == b"y"
    assert sorted(p.name for p in (upper / "opaque").iterdir()) == ["new"]
    owned = os.stat(upper / "owned")
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1000, 1001, 0o750)
    assert os.getxattr(upper / "owned", "user.note") == b"n"


def test_overlay_hardlink_copies_the_target_up(layers: tuple[Path, Path]) -> None:
    lower, upper = layers
    os.chmod(lower / "etc" / "keep", 0o640)
    layer = make_tar(tar_entry("etc/alias", L, linkname="etc/keep"))
    apply_chunks([layer], upper, overlay=OverlayUpper(lowers=(str(lower),)))
    assert (upper / "etc" / "keep").read_bytes() == b"keep"
    # the link entry's own metadata lands on the inode, as containerd's applier does
    assert stat.S_IMODE((upper / "etc" / "keep").stat().st_mode) == 0o644
    assert (upper / "etc" / "alias").stat().st_ino == (upper / "etc" / "keep").stat().st_ino
    assert (lower / "etc" / "keep").stat().st_nlink == 1


@pytest.mark.parametrize(
    "entries",
    [
        [tar_entry("etc/.wh.keep"), tar_entry("etc/alias", L, linkname="etc/keep")],
        [tar_entry("alias", L, linkname="nowhere")],
        [tar_entry("alias", L, linkname="etc")],
    ],
)
def test_overlay_hardlink_to_missing_target_is_refused(
    layers: tuple[Path, Path], entries: list[tuple[tarfile.TarInfo, bytes | None]]
) -> None:
    lower, upper = layers
    with pytest.raises(InvalidArgumentError, match="hard link target"):
        apply_chunks([make_tar(*entries)], upper, overlay=OverlayUpper(lowers=(str(lower),)))


# --- decompression ----------------------------------------------------------------------


def test_gzip_members_and_zstd_frames_are_concatenated() -> None:
    one, two = os.urandom(3 << 20), b"b" * (5 << 20)
    gz = gzip.compress(one) + gzip.compress(two)
    zst = zstandard.ZstdCompressor().compress(one) + zstandard.ZstdCompressor().compress(two)
    for blob, kind in ((gz, "gzip"), (zst, "zstd"), (gz, ""), (zst, "")):
        out = list(_decompressed(_chunks(blob, 100_000), kind))
        assert b"".join(out) == one + two
        assert max(len(c) for c in out) <= 1 << 20


_TAR = make_tar(tar_entry("f", data=b"data" * 1000))


@pytest.mark.parametrize(
    "blob",
    [
        gzip.compress(_TAR)[:-3],
        gzip.compress(_TAR) + b"trailing garbage",
        gzip.compress(_TAR)[:40] + b"\0" * 20 + gzip.compress(_TAR)[60:],
    ],
    ids=["truncated", "trailing-garbage", "corrupt"],
)
def test_bad_gzip_streams_fail(tmp_path: Path, blob: bytes) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid compressed layer stream"):
        _apply_chunks(iter([blob]), "gzip", str(tmp_path), sync_fs=False)


# --- large layers: the digest is taken in a helper thread --------------------------------

_BIG = os.urandom(5 << 20) + b"tail"
_BIG_TAR = make_tar(tar_entry("d", D), tar_entry("d/big", data=_BIG), tar_entry("after", data=b"x"))


@pytest.mark.parametrize("kind", ["gzip", "zstd", ""])
def test_large_layer_digest_covers_every_byte_in_order(tmp_path: Path, kind: str) -> None:
    if kind == "gzip":
        blob = gzip.compress(_BIG_TAR, compresslevel=1)
    elif kind == "zstd":
        blob = zstandard.ZstdCompressor().compress(_BIG_TAR)
    else:
        blob = _BIG_TAR
    # small input chunks first (digested in line), then large ones (the helper thread)
    chunks = [blob[:1000], blob[1000:5000], *_chunks(blob[5000:], 700_000)]
    dgst, size = _apply_chunks(iter(chunks), kind, str(tmp_path), sync_fs=False)
    assert (dgst, size) == ("sha256:" + hashlib.sha256(_BIG_TAR).hexdigest(), len(_BIG_TAR))
    assert (tmp_path / "d" / "big").read_bytes() == _BIG
    assert (tmp_path / "after").read_bytes() == b"x"


_BIG_GZ = gzip.compress(_BIG_TAR, compresslevel=1)


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (_BIG_GZ[: len(_BIG_GZ) // 2], "invalid compressed layer stream"),
        (_BIG_GZ[:-20] + bytes(b ^ 0xFF for b in _BIG_GZ[-20:]), "invalid compressed layer stream"),
        (gzip.compress(_BIG_TAR[: 3 << 20], compresslevel=1), "unexpected end of data"),
    ],
    ids=["truncated-gzip", "corrupt-gzip-trailer", "truncated-tar"],
)
def test_large_layer_failing_midway_fails_the_same_and_leaves_no_busy_helper(
    tmp_path: Path, blob: bytes, why: str
) -> None:
    for attempt in range(12):  # more failures than helper threads: none may stay busy
        target = tmp_path / str(attempt)
        target.mkdir()
        with pytest.raises(InvalidArgumentError, match=why):
            _apply_chunks(_chunks(blob, 1 << 20), "gzip", str(target), sync_fs=False)
    (tmp_path / "ok").mkdir()
    dgst, _ = _apply_chunks(iter([_BIG_GZ]), "gzip", str(tmp_path / "ok"), sync_fs=False)
    assert dgst == "sha256:" + hashlib.sha256(_BIG_TAR).hexdigest()


def test_a_failing_digest_helper_neither_blocks_the_apply_nor_goes_unseen() -> None:
    class BrokenHasher(digests.Hasher):
        def update(self, data: bytes | bytearray | memoryview) -> None:
            del data
            raise MemoryError

    digester = _Digester(BrokenHasher())
    chunks = [b"x" * (1 << 20)] * 10  # far more than the helper's queue holds
    assert sum(len(c) for c in digester.feed(iter(chunks))) == 10 << 20
    with pytest.raises(MemoryError):
        digester.finish()


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "a/b/c.txt",
        "file.",
        "dir/",
        "/abs/path",
        "./rel",
        "../up",
        "a/../b",
        "a/./b",
        "a//b",
        "a/.hidden",
        "a/..",
        "a/.",
        ".",
        "..",
        "",
        "/",
        "...",
        "a/...b",
        "a.b/c..d",
    ],
)
def test_clean_name_is_normpath_also_on_its_fast_path(name: str) -> None:
    from pycontainerd.snapshots.pathres import clean_name

    assert clean_name(name) == posixpath.normpath("/" + name).lstrip("/")


@pytest.mark.parametrize(
    "field",
    [
        b"0000644\x00",
        b"0000644 ",
        b"  644 \x00",
        b"\x00" * 8,
        b"0777\x00junk",
        b"\x80" + b"\x00" * 6 + b"\x05",
    ],
)
def test_numbers_read_the_same_the_second_time(field: bytes) -> None:
    from pycontainerd.snapshots.tarread import _number, _parse_number

    assert _number(field) == _parse_number(field)
    assert _number(field) == _parse_number(field)  # now from what was remembered


def test_a_bad_number_is_refused_every_time() -> None:
    from pycontainerd.snapshots.tarread import _number

    for _ in range(2):
        with pytest.raises(InvalidArgumentError, match="bad octal number"):
            _number(b"0009\x00\x00\x00\x00")
