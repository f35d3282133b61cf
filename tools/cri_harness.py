"""A harness for running critest (the CRI validation suite) offline, by hand.

It sets up everything critest needs on a machine without internet access and
runs one daemon on it, pycontainerd or Debian's containerd, so both are tested
on the same harness:

- stand-in images (OCI, gzip layers) for every image critest pulls: a
  dynamically linked busybox (extracted from Debian's ``busybox`` package with
  ``apt-get download`` + ``dpkg-deb -x``, never installed) and one small static
  C program (``tools/cri_harness_standin.c``) for pause, the web servers and
  nonewprivs;
- a ``docker-registry`` on 127.0.0.1 holding them;
- a CNI conflist (bridge + host-local on a private subnet + portmap, and a
  loopback config) for Debian's plugins;
- a daemon config mirroring registry.k8s.io, gcr.io and docker.io to that
  registry, with ``restrict_oom_score_adj = true``.

It never builds critest: pass the path of a critest binary you built yourself.

Usage::

    python tools/cri_harness.py --daemon pycontainerd            # set up, print, wait
    python tools/cri_harness.py --daemon containerd --critest PATH -- --ginkgo.skip 'exec|attach'

Without ``--critest`` it prints the critest command line and waits for Ctrl-C;
with it, it runs critest with the extra arguments, then tears everything down
(pods, daemon, shims, network namespaces, bridge, registry). Run as root.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pycontainerd.remotes.testing import Registry

HERE: Final = Path(__file__).resolve().parent
STANDIN_C: Final = HERE / "cri_harness_standin.c"
CNI_BIN_DIR: Final = "/usr/lib/cni"
ARCH: Final = "amd64"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
PATH_ENV: Final = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
K8S: Final = "e2e-test-images"
STAGING: Final = "k8s-staging-cri-tools"
ETC_USERS: Final = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP: Final = "root:x:0:\ndaemon:x:1:\nwww-data:x:33:\nusers:x:100:\nnogroup:x:65534:\n"
# critest's streaming specs (exec, attach, port-forward: issue #16)
DEFAULT_SKIP: Final = r"\[k8s.io\] Streaming"


# -- layers and images ------------------------------------------------------------------------


@dataclass
class Layer:
    """An uncompressed layer being built: files, directories and symlinks."""

    buf: io.BytesIO = field(default_factory=io.BytesIO)
    tar: tarfile.TarFile | None = None
    dirs: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def _t(self) -> tarfile.TarFile:
        assert self.tar is not None  # noqa: S101
        return self.tar

    def dir(self, name: str, mode: int = 0o755) -> None:
        """Add a directory (and its parents)."""
        parts = name.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d in self.dirs:
                continue
            self.dirs.add(d)
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = mode if i == len(parts) else 0o755
            self._t().addfile(info)

    def _entry(self, name: str) -> tarfile.TarInfo:
        """A header for ``name`` (leading and trailing ``/`` dropped), its parents added first."""
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        return tarfile.TarInfo(name)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Add a regular file owned by root."""
        info = self._entry(name)
        info.size = len(data)
        info.mode = mode
        self._t().addfile(info, io.BytesIO(data))

    def symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        info = self._entry(name)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        self._t().addfile(info)

    def hardlink(self, name: str, target: str, mode: int = 0o755) -> None:
        """Add a hard link to ``target`` (a file already in this layer)."""
        info = self._entry(name)
        info.type = tarfile.LNKTYPE
        info.linkname = target.strip("/")
        info.mode = mode  # appliers chmod the (shared) inode with the link's mode
        self._t().addfile(info)

    def close(self) -> bytes:
        """The tar's bytes."""
        self._t().close()
        return self.buf.getvalue()


def sha(data: bytes) -> str:
    """``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    """An OCI image: its gzip layers, config and manifest."""

    blobs: list[tuple[str, bytes]]
    manifest: bytes


def make_image(layers: list[bytes], config: dict[str, object]) -> Image:
    """An OCI image of uncompressed ``layers`` (gzipped here) and the runtime ``config``."""
    from pycontainerd.core.testing import oci_image

    gz = [gzip.compress(layer, mtime=0) for layer in layers]
    cfg, manifest = oci_image(gz, config, architecture=ARCH)
    return Image(blobs=[*((OCI_LAYER, b) for b in gz), (OCI_CONFIG, cfg)], manifest=manifest)


def dynamic_busybox(cache: Path) -> Path:
    """Debian's dynamically linked busybox, extracted (not installed) into ``cache``."""
    out = cache / "busybox-deb"
    binary = out / "bin" / "busybox"
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "download", "busybox"], cwd=cache, check=True)
    debs = sorted(cache.glob("busybox_*.deb"))
    if not debs:
        msg = "apt-get download busybox left no .deb"
        raise RuntimeError(msg)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(out)], check=True)
    return binary


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries (and the loader) ``binary`` needs, from ``ldd``."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        words = line.split()
        for word in words:
            if word.startswith("/"):
                libs.append(Path(word))
                break
    return libs


def standin_binary(cache: Path) -> Path:
    """``tools/cri_harness_standin.c`` compiled statically."""
    out = cache / "standin"
    if not out.is_file() or out.stat().st_mtime < STANDIN_C.stat().st_mtime:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["gcc", "-static", "-Os", "-Wall", "-o", str(out), str(STANDIN_C)], check=True
        )
    return out


def base_layer(busybox: Path, standin: bytes) -> bytes:
    """A busybox root: the dynamic busybox, its libraries, every applet, passwd and group."""
    layer = Layer()
    for d in ("proc", "sys", "dev", "root", "home", "var/run", "var/www", "etc", "usr/sbin"):
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.file("bin/busybox", busybox.read_bytes(), 0o755)
    added: set[str] = set()
    for lib in shared_libraries(busybox):
        real = lib.resolve()
        target = f"lib/{ARCH_TRIPLET}/{real.name}"
        if target not in added:
            added.add(target)
            layer.file(target, real.read_bytes(), 0o755)
        if lib.name != real.name or lib.parent.as_posix() != f"/lib/{ARCH_TRIPLET}":
            layer.symlink(lib.as_posix(), f"/{target}")
    listed = subprocess.run(
        [str(busybox), "--list-full"], capture_output=True, text=True, check=True
    ).stdout
    # hard links, as in busybox images: masking /bin/ls must not mask busybox itself
    applets = set(listed.split()) - {"bin/busybox"}
    for applet in sorted(applets):
        layer.hardlink(applet, "bin/busybox")
    # Debian's dynamic build lacks a few applets critest runs (ipcs, pgrep),
    # (neither has them: they come from the stand-in program)
    layer.file("bin/cri-standin", standin, 0o755)
    names = {a.rsplit("/", 1)[-1] for a in applets}
    for applet in ("ipcs", "pgrep"):
        if applet not in names:
            layer.hardlink(f"usr/bin/{applet}", "bin/cri-standin")
    layer.file("etc/passwd", ETC_USERS.encode())
    layer.file("etc/group", GROUP.encode())
    return layer.close()


ARCH_TRIPLET: Final = "x86_64-linux-gnu"


def one_file(name: str, data: bytes, mode: int = 0o755) -> bytes:
    """A layer with one file."""
    layer = Layer()
    layer.file(name, data, mode)
    return layer.close()


def images(cache: Path) -> dict[str, Image]:
    """Every stand-in image, keyed by ``<registry path>:<tag>`` (as the mirror serves it)."""
    busybox = dynamic_busybox(cache)
    standin = standin_binary(cache).read_bytes()
    base = base_layer(busybox, standin)
    shell: dict[str, object] = {"Cmd": ["sh"], "Env": [PATH_ENV]}
    out: dict[str, Image] = {}
    pause = make_image(
        [one_file("pause", standin)],
        {"Entrypoint": ["/pause"], "User": "65535:65535", "Env": [PATH_ENV]},
    )
    for tag in ("3.6", "3.7", "3.8", "3.9", "3.10"):
        out[f"pause:{tag}"] = pause
    out[f"{K8S}/busybox:1.29-2"] = make_image([base], shell)
    for name in ("test-image-1", "test-image-2", "test-image-3", "test-image-latest",
                 "test-image-digest"):  # fmt: skip
        out[f"{STAGING}/{name}:latest"] = make_image(
            [base, one_file(name, name.encode() + b"\n", 0o644)], shell
        )
    tags = make_image([base, one_file("test-image-tags", b"tags\n", 0o644)], shell)
    for tag in ("1", "2", "3"):
        out[f"{STAGING}/test-image-tags:{tag}"] = tags
    for tag in ("test", "all"):
        marker = f"test-image-tag-{tag}"
        out[f"{STAGING}/test-image-tag:{tag}"] = make_image(
            [base, one_file(marker, marker.encode(), 0o644)], shell
        )
    for suffix, user in (
        ("uid", "1002"),
        ("username", "www-data"),
        ("uid-group", "1003:1004"),
        ("username-group", "www-data:1004"),
    ):
        out[f"{STAGING}/test-image-user-{suffix}:latest"] = make_image(
            [base], {**shell, "User": user}
        )
    group_layer = Layer()
    group_layer.file(
        "etc/passwd",
        (ETC_USERS + "default-user:x:1000:1000::/home/default-user:/bin/sh\n").encode(),
    )
    group_layer.file(
        "etc/group",
        (GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n").encode(),
    )
    out[f"{STAGING}/test-image-predefined-group:latest"] = make_image(
        [base, group_layer.close()], {**shell, "User": "1000"}
    )
    server = Layer()
    for name in ("usr/sbin/nginx", "usr/sbin/httpd"):
        server.file(name, standin, 0o755)
    server_layer = server.close()
    out[f"{K8S}/nginx:1.14-2"] = make_image(
        [base, server_layer],
        {"Entrypoint": ["/usr/sbin/nginx", "-g", "master process"], "Env": [PATH_ENV]},
    )
    out[f"{K8S}/httpd:2.4.39-4"] = make_image(
        [base, server_layer], {"Entrypoint": ["/usr/sbin/httpd"], "Env": [PATH_ENV]}
    )
    out[f"{STAGING}/hostnet-nginx-{ARCH}:latest"] = make_image(
        [base, server_layer],
        {"Entrypoint": ["/usr/sbin/nginx", "-g", "master process", "12003"], "Env": [PATH_ENV]},
    )
    out[f"{K8S}/nonewprivs:1.3"] = make_image(
        [base, one_file("usr/local/bin/nonewprivs", standin, 0o4755)],
        {"Entrypoint": ["/usr/local/bin/nonewprivs"], "Env": [PATH_ENV]},
    )
    return out


def push(registry: Registry, all_images: dict[str, Image]) -> None:
    """Upload every image (blobs once per repository)."""
    from pycontainerd.remotes.testing import Blob

    done: set[tuple[str, str]] = set()
    for ref, image in all_images.items():
        repo, tag = ref.rsplit(":", 1)
        for media_type, data in image.blobs:
            if (repo, sha(data)) not in done:
                registry.put_blob(repo, Blob(media_type, data))
                done.add((repo, sha(data)))
        registry.put_manifest(repo, tag, Blob(OCI_MANIFEST, image.manifest))


# -- network and daemon config ---------------------------------------------------------------------


def write_cni(conf_dir: Path, ipam_dir: Path, bridge: str) -> str:
    """A bridge + host-local + portmap conflist and a loopback config; returns the subnet."""
    subnet = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}.0/24"
    conf_dir.mkdir(parents=True, exist_ok=True)
    conflist = {
        "cniVersion": "0.4.0",
        "name": f"critest-{bridge}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (conf_dir / "10-critest.conflist").write_text(json.dumps(conflist, indent=2))
    loopback = {"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}
    (conf_dir / "99-loopback.conf").write_text(json.dumps(loopback, indent=2))
    return subnet


def daemon_config(base: Path, registry_url: str, conf_dir: Path) -> str:
    """The daemon config both daemons get (version 2, as containerd 1.6 reads it)."""
    mirrors = "".join(
        f'[plugins."io.containerd.grpc.v1.cri".registry.mirrors."{host}"]\n'
        f'  endpoint = ["{registry_url}"]\n'
        for host in ("registry.k8s.io", "gcr.io", "docker.io")
    )
    return (
        "version = 2\n"
        f'root = "{base / "root"}"\n'
        f'state = "{base / "state"}"\n'
        "[grpc]\n"
        f'  address = "{base / "c.sock"}"\n'
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f'  path = "{base / "opt"}"\n'
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        '  sandbox_image = "registry.k8s.io/pause:3.6"\n'
        "  restrict_oom_score_adj = true\n"
        '  stream_server_address = "127.0.0.1"\n'
        '  stream_server_port = "0"\n'
        '[plugins."io.containerd.grpc.v1.cri".cni]\n'
        f'  bin_dir = "{CNI_BIN_DIR}"\n'
        f'  conf_dir = "{conf_dir}"\n' + mirrors
    )


# -- running ---------------------------------------------------------------------------------------


def daemon_command(kind: str, base: Path) -> tuple[list[str], dict[str, str]]:
    """The daemon's command line and environment."""
    env = dict(os.environ)
    config = str(base / "config.toml")
    if kind == "containerd":
        binary = shutil.which("containerd", path="/usr/bin:/usr/sbin") or "containerd"
        return [binary, "--config", config], env
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "/usr/bin:/bin")])
    env.pop("CONTAINERD_ADDRESS", None)
    return [sys.executable, "-m", "pycontainerd.daemon", "--config", config], env


def wait_socket(path: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Wait until the daemon's socket accepts connections."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"daemon exited {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            return
        time.sleep(0.1)
    msg = "daemon socket did not appear in time"
    raise RuntimeError(msg)


def remove_pods(sock: Path) -> None:
    """Stop and remove every pod sandbox through the CRI (as ``crictl rmp -fa``)."""
    import grpc

    from pycontainerd.api.cri.v1 import api_pb2 as pb
    from pycontainerd.api.cri.v1 import api_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"unix://{sock}") as channel:
        rt = pb_grpc.RuntimeServiceStub(channel)
        try:
            pods = rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items
        except grpc.RpcError as exc:
            print(f"listing pods failed: {exc}", file=sys.stderr)
            return
        for pod in pods:
            try:
                rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
                rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
            except grpc.RpcError as exc:
                print(f"pod {pod.id}: {exc}", file=sys.stderr)


def kill_shims(base: Path) -> None:
    """SIGKILL shims whose command line names this harness's daemon."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            if b"shim" in cmdline and str(base).encode() in cmdline:
                os.kill(int(proc.name), signal.SIGKILL)


def unmount_under(base: Path) -> None:
    """Lazily unmount everything mounted below ``base`` (deepest first)."""
    mounts = []
    with Path("/proc/self/mountinfo").open() as fh:
        for line in fh:
            point = line.split()[4]
            if point.startswith(str(base) + "/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@contextlib.contextmanager
def harness(kind: str, base: Path, cache: Path) -> Iterator[Path]:
    """Registry, images, CNI, config and the daemon; yields the socket path."""
    from pycontainerd.remotes.testing import Registry

    bridge = f"crih{secrets.token_hex(3)}"
    registry = Registry(base / "registry")
    with contextlib.ExitStack() as stack:
        stack.callback(unmount_under, base)
        stack.callback(subprocess.run, ["ip", "link", "del", bridge], capture_output=True)
        stack.enter_context(registry.running())
        print(f"registry: {registry.url}", file=sys.stderr)
        push(registry, images(cache))
        conf_dir = base / "net.d"
        subnet = write_cni(conf_dir, base / "ipam", bridge)
        print(f"CNI: bridge {bridge} on {subnet}", file=sys.stderr)
        (base / "config.toml").write_text(daemon_config(base, registry.url, conf_dir))
        cmd, env = daemon_command(kind, base)
        log_path = base / "daemon.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        sock = base / "c.sock"
        (base / "daemon.pid").write_text(f"{proc.pid}\n")

        def stop_daemon() -> None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            kill_shims(base)

        stack.callback(stop_daemon)
        wait_socket(sock, proc, log_path, 120)
        print(f"{kind} up (pid {proc.pid}), log {log_path}", file=sys.stderr)
        try:
            yield sock
        finally:
            remove_pods(sock)


def main(argv: list[str] | None = None) -> int:
    """Set up, run critest (or wait), tear down."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--daemon", choices=("pycontainerd", "containerd"), default="pycontainerd")
    parser.add_argument("--dir", type=Path, help="work directory (default: a new one in /tmp)")
    parser.add_argument("--cache", type=Path, help="where the busybox .deb and binary are kept")
    parser.add_argument("--critest", help="a critest binary to run (else: print and wait)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("args", nargs="*", help="extra critest arguments (after --)")
    opts = parser.parse_args(argv)
    base = opts.dir or Path(tempfile.mkdtemp(prefix="crih-", dir="/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    cache = opts.cache or Path(tempfile.gettempdir()) / "cri-harness-cache"
    code = 0
    try:
        with harness(opts.daemon, base, cache) as sock:
            endpoint = f"unix://{sock}"
            extra = opts.args or ["--ginkgo.skip", DEFAULT_SKIP]
            cmd = [opts.critest or "critest", "--runtime-endpoint", endpoint,
                   "--image-endpoint", endpoint, *extra]  # fmt: skip
            print(" ".join(_quote(c) for c in cmd), flush=True)
            if opts.critest:
                code = subprocess.run(cmd, check=False).returncode
            else:
                with contextlib.suppress(KeyboardInterrupt):
                    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                    while True:
                        time.sleep(3600)
    finally:
        if not opts.keep:
            unmount_under(base)
            shutil.rmtree(base, ignore_errors=True)
    return code


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


if __name__ == "__main__":
    sys.exit(main())
