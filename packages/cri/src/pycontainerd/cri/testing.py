"""Test helpers: a daemon with the CRI plugin, an offline pause image, a CNI bridge.

For this package's tests. Nothing here is imported by the plugin itself.
Importing this module does not import pytest or grpc.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pycontainerd.core.testing import RUNTIME_PLUGINS

if TYPE_CHECKING:
    from collections.abc import Iterator

    import grpc

    from pycontainerd.api.cri.v1 import api_pb2 as pb
    from pycontainerd.api.cri.v1 import api_pb2_grpc as pb_grpc
    from pycontainerd.core.testing import Daemon
    from pycontainerd.remotes.testing import Registry as RemotesRegistry

CNI_BIN_DIR: Final = "/usr/lib/cni"
"""Where Debian's ``containernetworking-plugins`` puts the CNI plugins."""
PAUSE_REF: Final = "localhost/pycontainerd-test/pause:1"
SHELL_REF: Final = "localhost/pycontainerd-test/busybox:1"
MIRRORED: Final = "registry.invalid"
"""A registry name the ``cri_registry`` fixture's config mirrors to its registry on 127.0.0.1."""
MODULES: Final = (*RUNTIME_PLUGINS, "pycontainerd.transfer.plugin", "pycontainerd.cri.plugin")
"""The plugin modules of the daemons these tests start."""
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64"}
_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def static_busybox() -> Path | None:
    """The system's static busybox (Debian ``busybox-static``), if any."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        path = Path(candidate)
        if path.is_file() and b"ld-linux" not in path.read_bytes()[:8192]:
            return path
    return None


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def pause_image(
    busybox: Path,
    *,
    entrypoint: tuple[str, ...] = ("/bin/sleep", "2000000"),
    user: str = "65535:65535",
    applets: tuple[str, ...] = ("sh", "sleep"),
    files: dict[str, bytes] | None = None,
) -> tuple[bytes, bytes, bytes]:
    """A stand-in pause image: (config, manifest, gzip layer).

    One layer: the static busybox with ``sh`` and ``sleep`` links (and
    ``files`` under ``etc/``...); the entrypoint sleeps (the sandbox is
    stopped with SIGKILL), as user ``65535:65535`` like the real pause image.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "proc", "sys", "dev", "etc", "tmp"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        _file(tar, "bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        for name, data in sorted((files or {}).items()):
            _file(tar, name, data)
    layer = buf.getvalue()
    blob = gzip.compress(layer, mtime=0)
    arch = _GOARCH.get(platform.machine(), platform.machine())
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {
                "Entrypoint": list(entrypoint),
                "Env": ["PATH=/bin"],
                "User": user,
                "WorkingDir": "/",
            },
            "rootfs": {"type": "layers", "diff_ids": [_sha(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": _OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(blob),
                    "size": len(blob),
                }
            ],
        }
    ).encode()
    return config, manifest, blob


def build_pause_archive(
    busybox: Path,
    dest: Path,
    ref: str = PAUSE_REF,
    *,
    entrypoint: tuple[str, ...] = ("/bin/sleep", "2000000"),
    user: str = "65535:65535",
    applets: tuple[str, ...] = ("sh", "sleep"),
    files: dict[str, bytes] | None = None,
) -> str:
    """An OCI archive of :func:`pause_image` named ``ref``; returns its manifest digest."""
    config, manifest, blob = pause_image(
        busybox, entrypoint=entrypoint, user=user, applets=applets, files=files
    )
    arch = _GOARCH.get(platform.machine(), platform.machine())
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": _OCI_MANIFEST,
                    "digest": _sha(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {"io.containerd.image.name": ref},
                }
            ],
        }
    ).encode()
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _file(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _file(tar, "index.json", index)
        for data in (config, manifest, blob):
            _file(tar, f"blobs/sha256/{hashlib.sha256(data).hexdigest()}", data)
    return _sha(manifest)


def seed_pause(
    registry: RemotesRegistry,
    busybox: Path,
    repo: str,
    tag: str,
    user: tuple[str, str] | None = None,
) -> tuple[str, str, str]:
    """Upload :func:`pause_image` to ``registry`` as ``repo:tag``.

    Returns ``(reference, manifest digest, config digest)``.
    """
    from pycontainerd.remotes.testing import Blob

    config, manifest, blob = pause_image(busybox)
    registry.put_blob(repo, Blob("application/vnd.oci.image.layer.v1.tar+gzip", blob), user)
    registry.put_blob(repo, Blob("application/vnd.oci.image.config.v1+json", config), user)
    registry.put_manifest(repo, tag, Blob(_OCI_MANIFEST, manifest), user)
    return f"{registry.host}/{repo}:{tag}", _sha(manifest), _sha(config)


@contextlib.contextmanager
def cni_bridge(conf_dir: Path, data_dir: Path, *, plugin: str = "bridge") -> Iterator[str]:
    """Write a bridge + host-local conflist on a random private /24; yields the subnet.

    The bridge has a name unique to the caller and is deleted on exit, with
    the IPAM state in ``data_dir``. ``plugin`` replaces the main plugin type
    (a failing stand-in, for fault tests).
    """
    tag = secrets.token_hex(4)
    bridge = f"cri{tag}"
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}.0/24"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "0.4.0",
        "name": f"pycri-{tag}",
        "plugins": [
            {
                "type": plugin,
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "dataDir": str(data_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-pycri.conflist").write_text(json.dumps(conf))
    try:
        yield subnet
    finally:
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def cri_config(
    conf_dir: Path,
    *,
    sandbox_image: str = PAUSE_REF,
    bin_dir: str = CNI_BIN_DIR,
    mirrors: dict[str, str] | None = None,
    settings: str = "",
) -> str:
    """A daemon config with the CRI table pointing at ``conf_dir`` and Debian's CNI plugins.

    ``mirrors``: ``{registry host: endpoint URL}`` for ``registry.mirrors``.
    ``settings``: more TOML lines for the CRI table itself.
    """
    tables = "".join(
        f'[plugins."io.containerd.grpc.v1.cri".registry.mirrors."{host}"]\n  endpoint = ["{url}"]\n'
        for host, url in (mirrors or {}).items()
    )
    return (
        "version = 2\n"
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        f'  sandbox_image = "{sandbox_image}"\n'
        f"{settings}"
        '[plugins."io.containerd.grpc.v1.cri".cni]\n'
        f'  bin_dir = "{bin_dir}"\n'
        f'  conf_dir = "{conf_dir}"\n'
    ) + tables


def daemon_path_env() -> dict[str, str]:
    """PATH with this interpreter's scripts first (the pyrunc shim, ``containerd``)."""
    scripts = str(Path(sys.executable).parent)
    return {"PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}


def netns_files(state: Path) -> list[Path]:
    """The pinned namespace files the plugin holds under the daemon's state dir."""
    d = state / "io.containerd.grpc.v1.cri" / "netns"
    return sorted(d.iterdir()) if d.is_dir() else []


@dataclass
class Cri:
    """A running daemon with the CRI plugin, and stubs on its socket (for the tests)."""

    daemon: Daemon
    channel: grpc.Channel
    runtime: pb_grpc.RuntimeServiceStub
    images: pb_grpc.ImageServiceStub
    base: Path
    conf_dir: Path
    tag: str
    subnet: str = ""
    pause_digest: str = ""
    registry: RemotesRegistry | None = None
    """The registry ``sandbox_image`` is in when it was not imported (``cri_registry``)."""
    extra: object = None
    """What a fixture's extra setup made (``cri_registry_configs``: its HTTPS registry)."""

    def pod_config(self, name: str = "pod", **kwargs: object) -> pb.PodSandboxConfig:
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"{name}-{self.tag}", uid=self.tag, namespace="ns"),
            hostname=name,
            labels={"app": name, "tag": self.tag},
            **kwargs,  # type: ignore[arg-type]
        )
        return config

    def run(self, config: pb.PodSandboxConfig) -> str:
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        resp = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config))
        return str(resp.pod_sandbox_id)

    def import_image(
        self, ref: str, applets: tuple[str, ...], files: dict[str, bytes] | None = None
    ) -> None:
        """Import a busybox image ``ref`` into ``k8s.io``: ``applets``, ``files``, no
        entrypoint, run as root (see :func:`build_pause_archive`).
        """  # noqa: D205
        busybox = static_busybox()
        if busybox is None:
            msg = "busybox-static is not installed"
            raise AssertionError(msg)
        archive = self.base / f"{ref.replace('/', '_').replace(':', '_')}.tar"
        build_pause_archive(
            busybox, archive, ref, entrypoint=(), user="", applets=applets, files=files
        )
        self.daemon.ctr("-n", "k8s.io", "images", "import", str(archive))

    def start_container(
        self, sid: str, pod: pb.PodSandboxConfig, config: pb.ContainerConfig
    ) -> str:
        """Create ``config`` in the pod ``sid`` (made from ``pod``) and start it; its id."""
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        cid = str(
            self.runtime.CreateContainer(
                pb.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod)
            ).container_id
        )
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        return cid

    def logged_pod(self, name: str) -> tuple[pb.PodSandboxConfig, str, Path]:
        """Run a pod ``name`` whose containers log under ``<base>/logs``.

        Returns ``(its config, its sandbox id, the log directory)``.
        """
        logs = self.base / "logs"
        logs.mkdir()
        pod = self.pod_config(name, log_directory=str(logs))
        return pod, self.run(pod), logs

    def wait_exited(self, cid: str, timeout: float = 30) -> pb.ContainerStatus:
        """The status of the container ``cid`` once it has exited (AssertionError after
        ``timeout`` seconds).
        """  # noqa: D205
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st: pb.ContainerStatus = self.runtime.ContainerStatus(
                pb.ContainerStatusRequest(container_id=cid)
            ).status
            if st.state == pb.CONTAINER_EXITED:
                return st
            time.sleep(0.05)
        msg = f"{cid} did not exit"
        raise AssertionError(msg)

    def status(self, sid: str, *, verbose: bool = False) -> pb.PodSandboxStatusResponse:
        from pycontainerd.api.cri.v1 import api_pb2 as pb

        resp: pb.PodSandboxStatusResponse = self.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sid, verbose=verbose)
        )
        return resp


class StallingRegistry:
    """A registry on 127.0.0.1 whose one image (``<host>/stall:1``) never finishes.

    Its manifest and config are served; its layer blob's body stops after a
    few bytes and the connection stays open (until the server stops): a pull
    of it makes no progress.
    """

    REPOSITORY: Final = "stall"
    TAG: Final = "1"

    def __init__(self) -> None:
        from pycontainerd.core import platforms

        host = platforms.host()
        self.layer_size = 1 << 20
        self.layer_digest = "sha256:" + hashlib.sha256(b"never sent").hexdigest()
        self.config = json.dumps(
            {
                "architecture": host.architecture,
                "os": host.os,
                "rootfs": {"type": "layers", "diff_ids": [self.layer_digest]},
                "config": {},
            }
        ).encode()
        self.config_digest = "sha256:" + hashlib.sha256(self.config).hexdigest()
        self.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": self.config_digest,
                    "size": len(self.config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": self.layer_digest,
                        "size": self.layer_size,
                    }
                ],
            }
        ).encode()
        self.host = ""
        self.stalled = threading.Event()  # a layer download is hanging

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.REPOSITORY}:{self.TAG}"

    @contextlib.contextmanager
    def running(self) -> Iterator[StallingRegistry]:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        stop = threading.Event()
        registry = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self, body: bytes, media_type: str, *, send: bool) -> None:
                self.send_response(200)
                self.send_header("Content-Type", media_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Docker-Content-Digest", _digest(body))
                self.end_headers()
                if send:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self._route(send=False)

            def do_GET(self) -> None:
                self._route(send=True)

            def _route(self, *, send: bool) -> None:
                base = f"/v2/{registry.REPOSITORY}"
                if self.path == "/v2/":
                    self._answer(b"{}", "application/json", send=send)
                elif self.path in (
                    f"{base}/manifests/{registry.TAG}",
                    f"{base}/manifests/{_digest(registry.manifest)}",
                ):
                    self._answer(
                        registry.manifest, "application/vnd.oci.image.manifest.v1+json", send=send
                    )
                elif self.path == f"{base}/blobs/{registry.config_digest}":
                    self._answer(registry.config, "application/octet-stream", send=send)
                elif self.path == f"{base}/blobs/{registry.layer_digest}":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(registry.layer_size))
                    self.end_headers()
                    if send:
                        self.wfile.write(b"\x1f\x8b" + b"\0" * 1000)
                        self.wfile.flush()
                        registry.stalled.set()
                        stop.wait()
                else:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        self.host = f"127.0.0.1:{server.server_address[1]}"
        try:
            yield self
        finally:
            stop.set()
            server.shutdown()
            server.server_close()
            thread.join()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
