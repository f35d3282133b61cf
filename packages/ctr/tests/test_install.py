"""``ctr install``: an image's ``bin/`` (and ``lib/``) files into the opt directory.

Against our daemon (with its ``opt`` plugin pointed into the test's
directory) and a real containerd; plus the extractor's path safety on
hand-made tar streams.
"""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.install import _Extractor
from pycontainerd.core.errdefs import AlreadyExistsError
from pycontainerd.core.testing import STORE_PLUGINS
from pycontainerd.daemon.testing import Daemon, daemon_env
from pycontainerd.remotes.testing import Registry, build_image

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Callable, Iterator

    from pycontainerd.client.testing import RealContainerd

    Ctr = Callable[..., subprocess.CompletedProcess[bytes]]

TOOL = build_image(
    [
        {"bin/hello": b"#!/bin/sh\necho hello\n", "etc/other": b"not installed\n"},
        {
            "bin/world": b"#!/bin/sh\necho world\n",
            "bin/sub/nested": b"nested\n",
            "lib/libx.so": b"\x7fELF fake\n",
        },
    ]
)


REGISTRY_IMAGES = {"test/tool:v1": TOOL}


@pytest.fixture(scope="module")
def ours_opt() -> Iterator[Daemon]:
    """Our daemon whose ``opt`` plugin installs under its own directory."""
    base = Path(tempfile.mkdtemp(prefix="pinst", dir="/tmp"))
    config = f'version = 2\n[plugins."io.containerd.internal.v1.opt"]\n  path = "{base}/opt"\n'
    daemon = Daemon(base, config=config, env=daemon_env(STORE_PLUGINS))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.kill()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["ours_opt", "containerd"])
def daemon(request: pytest.FixtureRequest) -> Daemon | RealContainerd:
    found: Daemon | RealContainerd = request.getfixturevalue(request.param)
    return found


def ok(res: subprocess.CompletedProcess[bytes]) -> str:
    assert res.returncode == 0, res.stderr.decode()
    return res.stdout.decode()


def test_install_into_opt_then_refuse_then_replace(
    registry: Registry, daemon: Daemon | RealContainerd, py: Ctr
) -> None:
    ns = f"t-{uuid.uuid4().hex[:10]}"
    ref = f"{registry.host}/test/tool:v1"
    opt = daemon.base / "opt"
    ok(py(daemon.address, "content", "fetch", "--plain-http", ref, namespace=ns))
    for name in ("hello", "world"):
        (opt / "bin" / name).unlink(missing_ok=True)
    ok(py(daemon.address, "install", ref, namespace=ns))
    assert (opt / "bin/hello").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert stat.S_IMODE((opt / "bin/hello").stat().st_mode) == 0o755
    assert (opt / "bin/world").read_bytes() == b"#!/bin/sh\necho world\n"
    assert (opt / "bin/sub").is_dir()  # the directory entry, not what is inside
    assert not (opt / "bin/sub/nested").exists()
    assert not (opt / "etc").exists()
    assert not (opt / "lib/libx.so").exists()  # only with --libs

    again = py(daemon.address, "install", ref, namespace=ns)
    assert again.returncode == 1
    assert again.stderr.decode() == f"ctr: cannot replace bin/hello in {opt}\n"

    (opt / "bin/hello").write_bytes(b"old")
    ok(py(daemon.address, "install", "--replace", "--libs", ref, namespace=ns))
    assert (opt / "bin/hello").read_bytes() == b"#!/bin/sh\necho hello\n"
    assert (opt / "lib/libx.so").read_bytes() == b"\x7fELF fake\n"


def test_install_with_path_and_errors(
    registry: Registry, ours_opt: Daemon, tmp_path: Path, py: Ctr
) -> None:
    ns = f"t-{uuid.uuid4().hex[:10]}"
    ref = f"{registry.host}/test/tool:v1"
    ok(py(ours_opt.address, "content", "fetch", "--plain-http", ref, namespace=ns))
    target = tmp_path / "here"
    target.mkdir()
    ok(py(ours_opt.address, "install", "-l", "--path", str(target), ref, namespace=ns))
    assert sorted(p.name for p in (target / "bin").iterdir()) == ["hello", "sub", "world"]
    assert (target / "lib/libx.so").is_file()

    missing_dir = tmp_path / "nowhere"
    res = py(ours_opt.address, "install", "--path", str(missing_dir), ref, namespace=ns)
    assert res.returncode == 1
    assert res.stderr.decode().startswith(
        f"ctr: mkdir {missing_dir}/bin: no such file or directory"
    )
    res = py(ours_opt.address, "install", f"{registry.host}/test/absent:v1", namespace=ns)
    assert res.returncode == 1
    assert "not found" in res.stderr.decode()
    res = py(ours_opt.address, "install", namespace=ns)
    assert res.returncode == 1
    assert "please provide an image reference" in res.stderr.decode()


# -- the extractor's safety, on hand-made layers ----------------------------------------------


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buf.seek(0)
    return buf


def _file(name: str, data: bytes, mode: int = 0o755) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def test_extractor_never_writes_outside_bin_and_lib(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    layer = _tar(
        [
            _file("bin/../../outside", b"evil"),
            _file("../bin/escape", b"escaped?"),
            _file("/bin/abs", b"absolute"),
            _file("./bin/dot", b"dot", mode=0o4755),
            _link("bin/hl", "../../outside", tarfile.LNKTYPE),
            _link("bin/ln", str(outside)),
            _file("bin/.wh.gone", b""),
        ]
    )
    ex = _Extractor(root, libs=False, replace=False)
    ex.apply(layer)
    assert outside.read_bytes() == b"precious"
    assert not (tmp_path / "bin").exists()
    # names are normalised under the root: "../bin/escape" is bin/escape *inside* it
    assert (root / "bin/escape").read_bytes() == b"escaped?"
    assert (root / "bin/abs").read_bytes() == b"absolute"
    assert (root / "bin/dot").read_bytes() == b"dot"
    assert stat.S_IMODE((root / "bin/dot").stat().st_mode) == 0o755  # set-id bits dropped
    assert not (root / "bin/hl").exists()  # hard link to something not installed
    assert (root / "bin/ln").is_symlink()
    assert not (root / "bin/.wh.gone").exists()
    assert sorted(ex.installed) == ["bin/abs", "bin/dot", "bin/escape", "bin/ln"]

    # replacing a symlink replaces the link, never writes through it
    ex = _Extractor(root, libs=False, replace=True)
    ex.apply(_tar([_file("bin/ln", b"new")]))
    assert not (root / "bin/ln").is_symlink()
    assert (root / "bin/ln").read_bytes() == b"new"
    assert outside.read_bytes() == b"precious"

    ex = _Extractor(root, libs=False, replace=False)
    with pytest.raises(AlreadyExistsError, match=f"cannot replace bin/abs in {root}"):
        ex.apply(_tar([_file("bin/abs", b"again")]))
