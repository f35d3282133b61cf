"""The main job behind ``make demo``: show what pycontainerd does, for real.

1. start our daemon (``python -m pycontainerd.daemon``) with its embedded
   defaults (no config file) on a root, state directory and socket in a new
   temporary directory;
2. get a small image **offline**: an OCI archive built here from the
   system's static busybox (one layer: ``bin/busybox`` plus applet links),
   imported with our ``ctr images import`` (or, when ``DEMO_IMAGE=<ref>`` is
   set, pulled with our ``ctr images pull`` instead);
3. run a container from it with our ``ctr run --rm`` that prints a line, and
   show that line;
4. stop the daemon by its PID and remove the temporary directory.

Every stage either runs for real or prints ``not yet available`` with the
reason. The exit status is 0 only when every stage that ran succeeded, and the
summary names the stages that did not run, so the demo never claims more than
it did.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

GO_CTR: Final = "/usr/bin/ctr"
GO_CONTAINERD: Final = "/usr/bin/containerd"
DEMO_REF: Final = "localhost/pycontainerd-demo/busybox:latest"
DEMO_LINE: Final = "hello from pycontainerd"
NAMESPACE: Final = "pycontainerd-demo"
PT_INTERP: Final = 3
GOARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le"}
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
BUSYBOX_APPLETS: Final = ("sh", "echo", "cat", "ls", "true", "false", "sleep")


class DemoError(Exception):
    """A stage that ran failed."""


@dataclass
class Report:
    """What ran, what failed, what is not there yet."""

    ran: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def not_available(self, stage: str, why: str) -> None:
        """Record a stage that cannot run yet and say why."""
        print(f"  not yet available: {why}")
        self.missing.append(stage)


def heading(text: str) -> None:
    """Print a stage heading."""
    print(f"\n== {text}")


def run(argv: Sequence[str], *, timeout: float = 60, check: bool = True, echo: bool = True) -> str:
    """Run a command, echo it (and its output unless ``echo`` is false), return stdout."""
    print(f"  $ {' '.join(argv)}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    out = (proc.stdout + proc.stderr).rstrip()
    for line in out.splitlines() if echo or proc.returncode else ():
        print(f"    {line}")
    if check and proc.returncode != 0:
        msg = f"{argv[0]} exited with {proc.returncode}"
        raise DemoError(msg)
    return proc.stdout


# --- the offline image -----------------------------------------------------------------


def is_static_elf(path: Path) -> bool:
    """Return whether ``path`` is an ELF executable without a program interpreter."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF":
        return False
    is64 = data[4] == 2
    order: Literal["little", "big"] = "little" if data[5] == 1 else "big"

    def num(offset: int, size: int) -> int:
        return int.from_bytes(data[offset : offset + size], order)

    phoff = num(0x20, 8) if is64 else num(0x1C, 4)
    phentsize = num(0x36, 2) if is64 else num(0x2A, 2)
    phnum = num(0x38, 2) if is64 else num(0x2C, 2)
    return all(num(phoff + i * phentsize, 4) != PT_INTERP for i in range(phnum))


def find_static_busybox() -> Path:
    """Return the system's static busybox.

    Raises:
        DemoError: there is none (install ``busybox-static``).
    """
    for candidate in ("/bin/busybox", "/usr/bin/busybox", shutil.which("busybox")):
        if candidate and Path(candidate).is_file() and is_static_elf(Path(candidate)):
            return Path(candidate)
    msg = "no static busybox found: install the busybox-static package"
    raise DemoError(msg)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def busybox_layer(busybox: Path) -> bytes:
    """Return an uncompressed, reproducible layer tar: ``/bin/busybox`` plus applet links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for directory in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        _add_bytes(tar, "bin/busybox", busybox.read_bytes(), mode=0o755)
        for applet in BUSYBOX_APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            link.mode = 0o777
            tar.addfile(link)
    return buf.getvalue()


def build_oci_archive(busybox: Path, dest: Path, ref: str = DEMO_REF) -> str:
    """Write an OCI image-layout tar of a one-layer busybox image to ``dest``.

    The index names the image ``ref`` (annotation ``io.containerd.image.name``),
    so ``ctr images import`` creates it under that name.

    Returns:
        The manifest digest.
    """
    layer = busybox_layer(busybox)
    compressed = gzip.compress(layer, mtime=0)
    arch = GOARCH.get(platform.machine(), platform.machine())
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        },
        sort_keys=True,
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [
                {
                    "mediaType": OCI_LAYER_GZIP,
                    "digest": _digest(compressed),
                    "size": len(compressed),
                }
            ],
        },
        sort_keys=True,
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": arch, "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rpartition(":")[2],
                    },
                }
            ],
        },
        sort_keys=True,
    ).encode()
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        _add_bytes(tar, "index.json", index)
        for blob in (config, manifest, compressed):
            _add_bytes(tar, f"blobs/sha256/{hashlib.sha256(blob).hexdigest()}", blob)
    return _digest(manifest)


# --- the daemon ------------------------------------------------------------------------


def ours(module: str) -> list[str]:
    """The command line of one of our programs, run with this interpreter."""
    return [sys.executable, "-m", module]


@contextlib.contextmanager
def daemon(workdir: Path) -> Iterator[str]:
    """Start our daemon with embedded defaults, its root, state and socket in ``workdir``.

    Yields:
        The gRPC socket path. The daemon is stopped by its PID (SIGTERM, then
        SIGKILL after 15 s) on exit.
    """
    sock = workdir / "containerd.sock"
    log = workdir / "daemon.log"
    argv = [
        *ours("pycontainerd.daemon"),
        "--root",
        str(workdir / "root"),
        "--state",
        str(workdir / "state"),
        "--address",
        str(sock),
    ]
    print(f"  $ {' '.join(argv)} &")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while "successfully booted" not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                print(log.read_text(errors="replace"))
                msg = f"the daemon exited with {proc.returncode} before serving"
                raise DemoError(msg)
            if time.monotonic() > deadline:
                msg = "the daemon did not boot within 30 s"
                raise DemoError(msg)
            time.sleep(0.05)
        print(f"  daemon pid {proc.pid} serving on {sock}")
        yield str(sock)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        print(f"  daemon (pid {proc.pid}) stopped, exit status {proc.returncode}")


def ctr(sock: str, *args: str, timeout: float = 120, check: bool = True, echo: bool = True) -> str:
    """Run our ``ctr`` against our daemon."""
    base = [*ours("pycontainerd.ctr"), "--address", sock, "--namespace", NAMESPACE]
    return run([*base, *args], timeout=timeout, check=check, echo=echo)


def plugin_ok(plugins_ls: str, plugin_type: str, plugin_id: str | None = None) -> bool:
    """Return whether ``ctr plugins ls`` output lists a matching plugin with status ok."""
    for line in plugins_ls.splitlines():
        cols = line.split()
        if (
            len(cols) >= 3
            and cols[0] == plugin_type
            and cols[-1] == "ok"
            and (plugin_id is None or cols[1] == plugin_id)
        ):
            return True
    return False


# --- stages ----------------------------------------------------------------------------


def stage_system(report: Report) -> None:
    """Show the system peers containerd's tests and the demo drive."""
    heading("system peers (containerd's Go binaries are the compatibility clients)")
    for argv in ([GO_CONTAINERD, "--version"], [GO_CTR, "--version"], ["runc", "--version"]):
        if shutil.which(argv[0]) is None:
            print(f"  {argv[0]}: not installed")
            continue
        run(argv)
    if shutil.which(GO_CONTAINERD):
        out = run([GO_CONTAINERD, "config", "default"], echo=False)
        print(
            f"  (upstream's default config: {len(out.splitlines())} lines, first is "
            f"{out.splitlines()[0]!r})"
        )
    report.ran.append("system")


def stage_distributions(report: Report) -> None:
    """List the installed pycontainerd distributions and their plugin registrations."""
    heading("installed pycontainerd distributions")
    dists = sorted(
        (d.metadata["Name"], d.version)
        for d in metadata.distributions()
        if str(d.metadata["Name"]).startswith("pycontainerd-")
    )
    for name, version in dists:
        print(f"  {name} {version}")
    if not dists:
        msg = "no pycontainerd distribution is installed (run `uv sync`)"
        raise DemoError(msg)

    heading("plugin registrations found through the entry-point group")
    import pluggy

    from pycontainerd.core.plugin import ENTRY_POINT_GROUP, PROJECT, Registration
    from pycontainerd.core.plugin import hookspecs as core_hookspecs

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(core_hookspecs)
    pm.hook.pycontainerd_addhooks.call_historic(kwargs={"pluginmanager": pm})
    count = pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    print(f"  {count} plugin modules loaded from {ENTRY_POINT_GROUP!r}")
    regs = [r for batch in pm.hook.pycontainerd_plugins() for r in batch]
    for reg in sorted(regs, key=lambda r: str(r.uri)):
        if not isinstance(reg, Registration):
            msg = f"a plugin module returned {type(reg).__name__}, not a Registration"
            raise DemoError(msg)
        requires = ", ".join(str(t) for t in reg.requires) or "-"
        print(f"  {reg.uri}  (requires: {requires})")
    if not regs:
        print("  (no registrations yet: the subsystems are still empty)")
    report.ran.append("plugins")


def stage_daemon(report: Report) -> None:
    """Start our daemon, talk to it with the Go ``ctr``, get an image, run it, stop."""
    heading("our daemon (embedded defaults), driven by our ctr")
    if find_spec("pycontainerd.daemon.main") is None or find_spec("pycontainerd.ctr.main") is None:
        report.not_available("daemon", "the daemon or ctr is not installed")
        report.missing.extend(["image", "run"])
        return
    workdir = Path(tempfile.mkdtemp(prefix="pcd-demo-", dir="/tmp"))
    try:
        with daemon(workdir) as sock:
            ctr(sock, "version")
            plugins = ctr(sock, "plugins", "ls")
            report.ran.append("daemon")
            image = stage_image(report, sock, plugins, workdir)
            if image is not None:
                stage_run(report, sock, plugins, image)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def stage_image(report: Report, sock: str, plugins: str, workdir: Path) -> str | None:
    """Get the demo image into the daemon: built offline, or ``DEMO_IMAGE`` pulled."""
    heading("an image")
    needed = [
        ("io.containerd.grpc.v1", "content"),
        ("io.containerd.grpc.v1", "images"),
        ("io.containerd.grpc.v1", "snapshots"),
        ("io.containerd.grpc.v1", "diff"),
    ]
    absent = [f"{t}.{i}" for t, i in needed if not plugin_ok(plugins, t, i)]
    if absent:
        report.not_available("image", f"the daemon does not serve {', '.join(absent)} yet")
        report.missing.append("run")
        return None
    pulled = os.environ.get("DEMO_IMAGE")
    if pulled:
        ctr(sock, "images", "pull", pulled, timeout=600)
        image = pulled
    else:
        archive = workdir / "busybox-oci.tar"
        digest = build_oci_archive(find_static_busybox(), archive)
        print(f"  built {archive.name} offline from the static busybox (manifest {digest})")
        ctr(sock, "images", "import", str(archive), timeout=300)
        image = DEMO_REF
    ctr(sock, "images", "ls")
    report.ran.append("image")
    return image


def stage_run(report: Report, sock: str, plugins: str, image: str) -> None:
    """Run a container that prints a line."""
    heading("a container")
    if not plugin_ok(plugins, "io.containerd.runtime.v2", "task"):
        report.not_available(
            "run", "the task runtime (io.containerd.runtime.v2.task) is not served yet"
        )
        return
    if os.geteuid() != 0:
        report.not_available("run", "running containers needs root (rootless is not supported)")
        return
    out = ctr(sock, "run", "--rm", image, f"demo-{os.getpid()}", "/bin/echo", DEMO_LINE)
    if out.strip() != DEMO_LINE:
        msg = f"the container printed {out!r}, not {DEMO_LINE!r}"
        raise DemoError(msg)
    print(f"\n  the container said: {out.strip()}")
    left = ctr(sock, "tasks", "ls", "-q", echo=False) + ctr(
        sock, "containers", "ls", "-q", echo=False
    )
    if left.strip():
        msg = f"run --rm left tasks or containers behind: {left.split()}"
        raise DemoError(msg)
    report.ran.append("run")


def main() -> int:
    """Run every stage and print an honest summary."""
    report = Report()
    for stage in (stage_system, stage_distributions, stage_daemon):
        try:
            stage(report)
        except (DemoError, OSError, subprocess.SubprocessError) as exc:
            print(f"  FAILED: {exc}")
            report.failed.append(stage.__name__.removeprefix("stage_"))
    heading("summary")
    print(f"  ran:               {', '.join(report.ran) or '-'}")
    print(f"  not yet available: {', '.join(report.missing) or '-'}")
    print(f"  failed:            {', '.join(report.failed) or '-'}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
