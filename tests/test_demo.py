"""``make demo``'s script (tools/demo.py): its offline image, and the whole run for real."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from types import ModuleType

DEMO = Path(__file__).resolve().parents[1] / "tools" / "demo.py"


def _load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pycontainerd_demo", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


def _busybox() -> Path:
    try:
        return Path(demo.find_static_busybox())
    except demo.DemoError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_static_elf_detection() -> None:
    assert demo.is_static_elf(_busybox())
    assert not demo.is_static_elf(Path(sys.executable).resolve())


def test_offline_image_is_a_valid_oci_layout(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    manifest_digest = demo.build_oci_archive(_busybox(), archive, ref="localhost/t/bb:1")
    with tarfile.open(archive) as tar:
        files = {
            m.name: f.read() for m in tar.getmembers() if (f := tar.extractfile(m)) is not None
        }
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    index = json.loads(files["index.json"])
    (entry,) = index["manifests"]
    assert entry["digest"] == manifest_digest
    assert entry["annotations"]["io.containerd.image.name"] == "localhost/t/bb:1"
    manifest = json.loads(files[f"blobs/sha256/{manifest_digest[7:]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'][7:]}"])
    layer_blob = files[f"blobs/sha256/{manifest['layers'][0]['digest'][7:]}"]
    layer = gzip.decompress(layer_blob)
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["bin/busybox"].isfile()
    assert members["bin/echo"].issym()
    assert members["bin/echo"].linkname == "busybox"


@pytest.mark.system
@pytest.mark.slow
def test_the_demo_runs_a_container_and_exits_zero() -> None:
    missing = [b for b in ("runc",) if shutil.which(b) is None]
    if missing or os.geteuid() != 0:
        why = f"needs root and {', '.join(missing) or 'runc'}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    _busybox()
    env = {k: v for k, v in os.environ.items() if k not in {"DEMO_IMAGE", "CONTAINERD_ADDRESS"}}
    res = subprocess.run(
        [sys.executable, str(DEMO)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"the container said: {demo.DEMO_LINE}" in res.stdout
    assert "failed:            -" in res.stdout
    assert "not yet available: -" in res.stdout
    assert "daemon (pid" in res.stdout
    assert "stopped, exit status 0" in res.stdout
