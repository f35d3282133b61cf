"""Benchmark images and a local registry to serve them.

Builds, deterministically and without any network:

- ``bench/busybox:latest``: one layer with the static busybox binary and its
  applet links (``sh``, ``true``, ``echo``, ...);
- ``bench/big:latest``: 20 layers, about 86 MB in all, one of them holding
  5 000 small files, the rest incompressible filler;
- ``bench/multi:latest``: an OCI index for ``linux/amd64`` and ``linux/arm64``
  (both point at busybox's layer; only the config's architecture differs).

:class:`Registry` runs Debian's ``docker-registry`` on 127.0.0.1 with its
storage under a temporary directory; :func:`seed` pushes the images with the
registry HTTP API (stdlib ``urllib``, plain HTTP).

    uv run python bench/images.py   # start a registry, seed it, print the refs, stop
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pycontainerd.remotes.testing import Blob, sha256

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX = "/bin/busybox"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
APPLETS = ("sh", "true", "false", "echo", "cat", "ls", "sleep", "env", "id", "uname")


@dataclass
class Layer:
    """A gzip layer and the digest of its uncompressed tar (the config's diff_id)."""

    blob: Blob
    diff_id: str


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            info.mtime = 0
            info.uid = info.gid = 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def make_layer(entries: list[tuple[tarfile.TarInfo, bytes | None]], *, level: int = 6) -> Layer:
    raw = _tar(entries)
    gz = gzip.compress(raw, compresslevel=level, mtime=0)
    return Layer(Blob(OCI_LAYER_GZIP, gz), sha256(raw))


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    return info, None


def busybox_layer() -> Layer:
    binary = Path(BUSYBOX).read_bytes()
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [_dir("bin"), _dir("tmp"), _dir("etc")]
    entries.append(_file("bin/busybox", binary, 0o755))
    entries += [_symlink(f"bin/{applet}", "busybox") for applet in APPLETS]
    entries.append(_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"))
    return make_layer(entries)


def small_files_layer(count: int = 5000) -> Layer:
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [_dir("data")]
    for d in range(count // 100):
        entries.append(_dir(f"data/d{d:03d}"))
        entries.extend(
            _file(f"data/d{d:03d}/f{f:03d}.txt", f"file {d}/{f}\n".encode() * 8) for f in range(100)
        )
    return make_layer(entries)


def filler_layer(index: int, size: int) -> Layer:
    data = random.Random(index).randbytes(size)  # noqa: S311 - filler, not crypto
    return make_layer([_dir(f"fill{index:02d}"), _file(f"fill{index:02d}/blob.bin", data)], level=1)


def config_blob(layers: list[Layer], arch: str = "amd64") -> Blob:
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    return Blob(OCI_CONFIG, json.dumps(config, sort_keys=True).encode())


@dataclass
class Image:
    """A repository and tag with every blob to push and the top-level manifest or index."""

    repo: str
    tag: str
    blobs: list[Blob] = field(default_factory=list)
    manifests: list[Blob] = field(default_factory=list)  # pushed by digest, before the top
    top: Blob | None = None


def manifest_blob(config: Blob, layers: list[Layer]) -> Blob:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.blob.descriptor() for layer in layers],
    }
    return Blob(OCI_MANIFEST, json.dumps(manifest, sort_keys=True).encode())


def single(repo: str, layers: list[Layer]) -> Image:
    config = config_blob(layers)
    return Image(
        repo,
        "latest",
        blobs=[*(layer.blob for layer in layers), config],
        top=manifest_blob(config, layers),
    )


def build_images(big_total: int = 86 * 1024 * 1024) -> list[Image]:
    """The three benchmark images (building the big one takes a few seconds)."""
    bb = busybox_layer()
    small = small_files_layer()
    fill = (big_total - len(small.blob.data)) // 19
    big_layers = [bb, small, *(filler_layer(i, fill) for i in range(18))]
    multi = Image("bench/multi", "latest")
    entries = []
    for arch in ("amd64", "arm64"):
        config = config_blob([bb], arch)
        manifest = manifest_blob(config, [bb])
        multi.blobs += [bb.blob, config]
        multi.manifests.append(manifest)
        entries.append(manifest.descriptor(platform={"architecture": arch, "os": "linux"}))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    multi.top = Blob(OCI_INDEX, json.dumps(index, sort_keys=True).encode())
    return [single("bench/busybox", [bb]), single("bench/big", big_layers), multi]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """Debian's docker-registry on 127.0.0.1, storage in a temporary directory."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pcdreg"))
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Registry:
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
        )
        log = (self.dir / "registry.log").open("wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1):
                    return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("docker-registry did not come up")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _request(
        self, method: str, path: str, data: bytes | None = None, ctype: str | None = None
    ) -> tuple[int, dict[str, str]]:
        url = path if path.startswith("http") else f"http://{self.host}{path}"
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        if ctype:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
                return resp.status, dict(resp.headers)
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers)

    def push_blob(self, repo: str, blob: Blob) -> None:
        status, _ = self._request("HEAD", f"/v2/{repo}/blobs/{blob.digest}")
        if status == 200:
            return
        status, headers = self._request("POST", f"/v2/{repo}/blobs/uploads/")
        if status != 202:
            raise RuntimeError(f"upload start for {repo}: HTTP {status}")
        location = headers["Location"]
        sep = "&" if "?" in location else "?"
        status, _ = self._request(
            "PUT", f"{location}{sep}digest={blob.digest}", blob.data, "application/octet-stream"
        )
        if status != 201:
            raise RuntimeError(f"upload of {blob.digest} to {repo}: HTTP {status}")

    def push_manifest(self, repo: str, ref: str, blob: Blob) -> None:
        status, _ = self._request("PUT", f"/v2/{repo}/manifests/{ref}", blob.data, blob.media_type)
        if status != 201:
            raise RuntimeError(f"manifest {repo}:{ref}: HTTP {status}")


def registry_available() -> bool:
    """Whether Debian's ``docker-registry`` is installed."""
    return os.access(REGISTRY_BIN, os.X_OK)


def seed(registry: Registry, images: list[Image] | None = None) -> list[str]:
    """Push the benchmark images; return their references (``host/repo:tag``)."""
    refs = []
    for image in images if images is not None else build_images():
        for blob in image.blobs:
            registry.push_blob(image.repo, blob)
        for manifest in image.manifests:
            registry.push_manifest(image.repo, manifest.digest, manifest)
        assert image.top is not None
        registry.push_manifest(image.repo, image.tag, image.top)
        refs.append(f"{registry.host}/{image.repo}:{image.tag}")
    return refs


if __name__ == "__main__":
    if not os.access(REGISTRY_BIN, os.X_OK):
        raise SystemExit(f"{REGISTRY_BIN} not installed (Debian package docker-registry)")
    t0 = time.monotonic()
    built = build_images()
    print(f"built {len(built)} images in {time.monotonic() - t0:.1f}s")
    with Registry() as reg:
        for ref in seed(reg, built):
            print(ref)
