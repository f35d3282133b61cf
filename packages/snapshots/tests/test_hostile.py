"""Hostile layer tarballs: each is refused and nothing outside the target changes."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.types import Descriptor, Mount
from pycontainerd.snapshots.archive import OverlayUpper, apply_chunks, apply_tar
from pycontainerd.snapshots.differ import MEDIA_TYPE_LAYER, WalkingDiffer
from pycontainerd.snapshots.testing import make_tar, put_blob, tar_entry

if TYPE_CHECKING:
    from pycontainerd.core.content import Store

D, S, L, F = tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.REGTYPE


def fingerprint(root: Path) -> dict[str, tuple[int, int, str]]:
    """Everything under ``root`` (type/mode, mtime, content or link target)."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                body = os.readlink(path)
            elif os.path.isfile(path):
                body = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            else:
                body = ""
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_mtime_ns, body)
    return out


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """``<tmp>/box/target`` to extract into and ``<tmp>/box/outside`` that must not change."""
    box = tmp_path / "box"
    target = box / "target"
    outside = box / "outside"
    target.mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_bytes(b"do not touch")
    (outside / "dir").mkdir()
    return target, outside


def hostile_cases(outside: Path) -> dict[str, bytes]:
    o = str(outside)
    return {
        "dotdot-name": make_tar(tar_entry("../outside/pwned", data=b"x")),
        "dotdot-inside-name": make_tar(tar_entry("a/../../outside/pwned", data=b"x")),
        "dotdot-dir": make_tar(tar_entry("../outside/dir/new", D)),
        "absolute-symlink-parent": make_tar(
            tar_entry("link", S, linkname=o), tar_entry("link/pwned", data=b"x")
        ),
        "relative-symlink-escaping": make_tar(
            tar_entry("rel", S, linkname="../outside"), tar_entry("rel/pwned", data=b"x")
        ),
        "deep-relative-symlink-escaping": make_tar(
            tar_entry("a", D),
            tar_entry("a/up", S, linkname="../../../../../../.."),
            tar_entry(f"a/up{o}/pwned", data=b"x"),
        ),
        "hardlink-dotdot": make_tar(tar_entry("hl", L, linkname="../outside/secret")),
        "hardlink-through-symlink": make_tar(
            tar_entry("p", S, linkname=o), tar_entry("hl", L, linkname="p/secret")
        ),
        "swapped-parent-absolute": make_tar(
            tar_entry("d", D),
            tar_entry("d/ok", data=b"fine"),
            tar_entry("d", S, linkname=o),
            tar_entry("d/pwned", data=b"x"),
        ),
        "swapped-parent-relative": make_tar(
            tar_entry("d", D),
            tar_entry("d", S, linkname="../outside"),
            tar_entry("d/secret", data=b"overwritten"),
        ),
        "whiteout-through-symlink": make_tar(
            tar_entry("w", S, linkname=o), tar_entry("w/.wh.secret")
        ),
        "opaque-through-symlink": make_tar(
            tar_entry("w", S, linkname=o), tar_entry("w/.wh..wh..opq")
        ),
        "dir-through-symlink": make_tar(tar_entry("w", S, linkname=o), tar_entry("w/dir/sub", D)),
        "symlink-loop": make_tar(
            tar_entry("x", S, linkname="y"),
            tar_entry("y", S, linkname="x"),
            tar_entry("x/f", data=b""),
        ),
    }


CASES = sorted(hostile_cases(Path("/placeholder")))


@pytest.mark.parametrize("case", CASES)
def test_hostile_tarball_is_refused(sandbox: tuple[Path, Path], case: str) -> None:
    target, outside = sandbox
    box = target.parent
    before = fingerprint(outside)
    before_box = sorted(p.name for p in box.iterdir())
    with pytest.raises(InvalidArgumentError, match=r"refusing tar entry|too many levels"):
        apply_tar(io.BytesIO(hostile_cases(outside)[case]), target)
    assert fingerprint(outside) == before
    assert sorted(p.name for p in box.iterdir()) == before_box


@pytest.mark.parametrize("case", CASES)
def test_hostile_tarball_is_refused_in_an_overlay_upper(
    sandbox: tuple[Path, Path], case: str, needs_root: None
) -> None:
    target, outside = sandbox
    before = fingerprint(outside)
    lower = target.parent / "lower"
    lower.mkdir()
    with pytest.raises(InvalidArgumentError, match=r"refusing tar entry|too many levels"):
        apply_chunks(
            [hostile_cases(outside)[case]], target, overlay=OverlayUpper(lowers=(str(lower),))
        )
    assert fingerprint(outside) == before


def test_symlinks_are_created_but_never_followed(sandbox: tuple[Path, Path]) -> None:
    target, outside = sandbox
    before = fingerprint(outside)
    layer = make_tar(
        tar_entry("s", S, linkname=str(outside / "secret")),
        tar_entry("s", data=b"replaces the link, not its target"),
        tar_entry("t", S, linkname=str(outside / "secret")),
        tar_entry("h", L, linkname="t"),
        tar_entry("inner", D),
        tar_entry("rel", S, linkname="inner"),
        tar_entry("rel/through-inner-link", data=b"ok"),
        tar_entry("/abs/name", data=b"lands inside"),
    )
    apply_tar(io.BytesIO(layer), target)
    assert fingerprint(outside) == before
    assert (target / "s").read_bytes() == b"replaces the link, not its target"
    assert os.readlink(target / "h") == str(outside / "secret")
    assert (target / "inner" / "through-inner-link").read_bytes() == b"ok"
    assert (target / "abs" / "name").read_bytes() == b"lands inside"


async def test_hostile_layer_through_the_differ(
    sandbox: tuple[Path, Path], store: Store, needs_root: None
) -> None:
    target, outside = sandbox
    before = fingerprint(outside)
    blob = hostile_cases(outside)["swapped-parent-absolute"]
    dgst = await put_blob(store, blob)
    with pytest.raises(InvalidArgumentError, match="absolute symbolic link"):
        await WalkingDiffer(store).apply(
            Descriptor(media_type=MEDIA_TYPE_LAYER, digest=dgst, size=len(blob)),
            [Mount(type="bind", source=str(target), options=("rw", "rbind"))],
        )
    assert fingerprint(outside) == before
