"""Hostile layer tarballs: resolved inside the target as containerd does; nothing outside changes.

containerd's applier resolves every entry inside the root, following symbolic
links as if the root were ``/``: layers that would climb out land inside
instead, and only what cannot be resolved (a hard link to a missing target,
a symbolic link loop) is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
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

#: what containerd makes of each case: the path (inside the target) and what is there,
#: or the error when it refuses; ``{o}`` is the outside directory's absolute path
EXPECTED: dict[str, tuple[str, str | bytes | None] | str] = {
    "dotdot-name": ("outside/pwned", b"x"),
    "dotdot-inside-name": ("outside/pwned", b"x"),
    "dotdot-dir": ("outside/dir/new", "dir"),
    "absolute-symlink-parent": ("{o}/pwned", b"x"),
    "relative-symlink-escaping": ("outside/pwned", b"x"),
    "deep-relative-symlink-escaping": ("{o}/pwned", b"x"),
    "hardlink-dotdot": "hard link target .* missing",
    "hardlink-through-symlink": "hard link target .* missing",
    "swapped-parent-absolute": ("{o}/pwned", b"x"),
    "swapped-parent-relative": ("outside/secret", b"overwritten"),
    "whiteout-through-symlink": ("{o}", "dir"),
    "opaque-through-symlink": ("{o}", "dir"),
    "dir-through-symlink": ("{o}/dir/sub", "dir"),
    "symlink-loop": "too many levels of symbolic links",
}


def check_result(target: Path, outside: Path, case: str, *, overlay: bool = False) -> None:
    """The case's layer was applied as containerd applies it, inside ``target``."""
    expected = EXPECTED[case]
    assert not isinstance(expected, str)
    rel, what = expected
    path = target / rel.format(o=str(outside).lstrip("/"))
    if what == "dir":
        assert path.is_dir()
        assert not path.is_symlink()
    else:
        assert path.read_bytes() == what
    if case == "whiteout-through-symlink" and overlay:
        assert stat.S_ISCHR(os.lstat(path / "secret").st_mode)


def test_every_case_has_an_expectation() -> None:
    assert sorted(EXPECTED) == CASES


@pytest.mark.parametrize("case", CASES)
def test_hostile_tarball_stays_inside(sandbox: tuple[Path, Path], case: str) -> None:
    target, outside = sandbox
    box = target.parent
    before = fingerprint(outside)
    before_box = sorted(p.name for p in box.iterdir())
    layer = io.BytesIO(hostile_cases(outside)[case])
    expected = EXPECTED[case]
    if isinstance(expected, str):
        with pytest.raises(InvalidArgumentError, match=expected):
            apply_tar(layer, target)
    else:
        apply_tar(layer, target)
        check_result(target, outside, case)
    assert fingerprint(outside) == before
    assert sorted(p.name for p in box.iterdir()) == before_box


@pytest.mark.parametrize("case", CASES)
def test_hostile_tarball_stays_inside_an_overlay_upper(
    sandbox: tuple[Path, Path], case: str, needs_root: None
) -> None:
    target, outside = sandbox
    box = target.parent
    lower = box / "lower"
    lower.mkdir()
    before = fingerprint(outside)
    before_box = sorted(p.name for p in box.iterdir())
    layer = [hostile_cases(outside)[case]]
    overlay = OverlayUpper(lowers=(str(lower),))
    expected = EXPECTED[case]
    if isinstance(expected, str):
        with pytest.raises(InvalidArgumentError, match=expected):
            apply_chunks(layer, target, overlay=overlay)
    else:
        apply_chunks(layer, target, overlay=overlay)
        check_result(target, outside, case, overlay=True)
    assert fingerprint(outside) == before
    assert sorted(p.name for p in box.iterdir()) == before_box


def test_debian_var_run_layout(tmp_path: Path) -> None:
    """``var/run -> /run`` from a base layer: a later ``var/run/x`` lands in ``run/x``."""
    base = make_tar(
        tar_entry("run", D),
        tar_entry("var", D),
        tar_entry("var/run", S, linkname="/run"),
        tar_entry("var/lock", S, linkname="../run/lock"),
    )
    top = make_tar(
        tar_entry("var/run/x", data=b"pid"),
        tar_entry("var/lock/l", data=b"lock"),
        tar_entry("../escaped", data=b"root"),
        tar_entry("/../abs", data=b"root too"),
        tar_entry("var/run/.wh.gone"),
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "gone").write_bytes(b"")
    apply_tar(io.BytesIO(base), tmp_path)
    apply_tar(io.BytesIO(top), tmp_path)
    assert (tmp_path / "run" / "x").read_bytes() == b"pid"
    assert (tmp_path / "run" / "lock" / "l").read_bytes() == b"lock"
    assert os.readlink(tmp_path / "var" / "run") == "/run"
    assert (tmp_path / "escaped").read_bytes() == b"root"
    assert (tmp_path / "abs").read_bytes() == b"root too"
    assert not (tmp_path / "run" / "gone").exists()


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
    await WalkingDiffer(store).apply(
        Descriptor(media_type=MEDIA_TYPE_LAYER, digest=dgst, size=len(blob)),
        [Mount(type="bind", source=str(target), options=("rw", "rbind"))],
    )
    check_result(target, outside, "swapped-parent-absolute")
    assert fingerprint(outside) == before
