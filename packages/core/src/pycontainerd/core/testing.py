"""The one home of the test helpers every package's tests share.

Waiting for a condition (:func:`wait_for`, :func:`wait_for_async`), failing or
skipping on a missing system peer (:func:`require_binary`), short socket homes
(:func:`short_tempdir`), keeping load tests apart (:func:`load_exclusion`), a
plugin module's checks (:func:`check_plugin_module`,
:func:`check_import_leaves_out`), the suites' hypothesis profiles
(:func:`load_hypothesis_profile`), and the two daemons the suites run as
subprocesses: ours (:class:`Daemon`, ``python -m pycontainerd.daemon``) and
containerd's Go daemon (:class:`RealContainerd`), both on a private root,
state and socket. Below those: the plugin module sets tests start our daemon
with (:data:`STORE_PLUGINS` and its runtime and transfer variants), a daemon
with the runtime whose shims are killed with it (:func:`runtime_daemon`), and
OCI images built offline (:func:`busybox_layer`, :func:`oci_image`,
:func:`write_oci_layout`).

``pycontainerd.daemon.testing`` and ``pycontainerd.client.testing`` re-export
these under their old names. Pure standard library: importing this module
imports neither pytest (only :func:`require_binary` does, when called) nor grpc
nor any other pycontainerd package, so any package's tests may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, Protocol, Self, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence
    from types import ModuleType, TracebackType

CTR: Final = "/usr/bin/ctr"
"""containerd's Go ``ctr`` (Debian package), called by absolute path: ours shadows it on PATH."""
CONTAINERD: Final = "/usr/bin/containerd"
"""containerd's Go daemon (Debian package), by absolute path for the same reason."""
DEFAULT_MODULES: Final = ("pycontainerd.daemon.plugin",)
"""The plugin modules :class:`Daemon` loads unless told otherwise."""
WAIT_TIMEOUT: Final = 15.0
"""How long :func:`wait_for` waits by default: generous, as the suite runs on a busy machine."""
_POLL: Final = 0.02


def require_binary(path: str) -> None:
    """Skip the test (fail it when ``CI=true``) if the system peer ``path`` is missing."""
    import pytest

    if not os.access(path, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is required under CI")
        pytest.skip(f"{path} not installed")


def _polls(timeout: float, what: str) -> Iterator[None]:
    """One item per poll until ``timeout`` seconds pass, then AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        yield
    msg = f"timed out after {timeout:g}s waiting for {what}"
    raise AssertionError(msg)


def wait_for(
    predicate: Callable[[], object], timeout: float = WAIT_TIMEOUT, what: str = "condition"
) -> None:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass (AssertionError)."""
    for _ in _polls(timeout, what):
        if predicate():
            return
        time.sleep(_POLL)


async def wait_for_async(
    predicate: Callable[[], object], limit: float = WAIT_TIMEOUT, what: str = "condition"
) -> None:
    """:func:`wait_for` inside an event loop: the loop keeps running between polls."""
    for _ in _polls(limit, what):
        if predicate():
            return
        await asyncio.sleep(_POLL)


def socket_answers(path: str) -> bool:
    """Whether something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


@contextlib.contextmanager
def short_tempdir(prefix: str) -> Iterator[Path]:
    """A new directory directly under ``/tmp``, removed with its contents on exit.

    pytest's ``tmp_path`` can be too long for a unix socket path (at most 107
    bytes); a daemon's base directory and other socket homes come from here.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


HEAVY_LOCK: Final = Path(tempfile.gettempdir()) / "pycontainerd-load-tests.lock"


@contextlib.contextmanager
def load_exclusion(*, exclusive: bool) -> Iterator[None]:
    """Keep load tests and timing-bound tests apart across pytest-xdist workers.

    A load test (hundreds of Go ``ctr`` processes) holds the lock ``exclusive``;
    a test that asserts a latency (an answer within a second) holds it shared,
    so the two never overlap while the rest of the suite runs in parallel.
    """
    import fcntl

    with HEAVY_LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def daemon_env(
    modules: Iterable[str] = DEFAULT_MODULES,
    *,
    python_path: Iterable[str] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment for our daemon loading exactly ``modules`` as plugin modules."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*python_path, *filter(None, [env.get("PYTHONPATH")])])
    env["PYCONTAINERD_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYCONTAINERD_EXTRA_PLUGINS"] = ",".join(modules)
    env.pop("CONTAINERD_ADDRESS", None)
    env.update(extra or {})
    return env


def containerd_cmd(*args: str) -> list[str]:
    """Our ``containerd <args>``, run with this interpreter."""
    return [sys.executable, "-m", "pycontainerd.daemon", *args]


class DaemonProcess:
    """A daemon subprocess serving ``address``, its output appended to ``log_path``.

    What both daemons share: the log, the Go ``ctr`` against the socket,
    stopping and killing. A subclass says how it starts.
    """

    #: What ``stop`` and ``wait`` call it in messages.
    name = "daemon"

    def __init__(self, base: Path, log_name: str) -> None:
        self.base = base
        self.address = str(base / "c.sock")
        self.log_path = base / log_name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def __enter__(self) -> Self:
        """Start it (see :meth:`start`); killed again if it does not come up."""
        try:
            return self.start()
        except BaseException:
            self.kill()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop it if it still runs."""
        self.on_exit()

    def start(self) -> Self:
        """Start it and wait until it serves (a subclass's job)."""
        raise NotImplementedError

    def on_exit(self) -> None:
        """What leaving the ``with`` block does: kill (the default)."""
        self.kill()

    def spawn(self, args: Sequence[str], env: dict[str, str]) -> None:
        """Start ``args`` with ``env``, stdout and stderr appended to the log."""
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """:func:`wait_for` ``ready``; AssertionError with the log if the process exits."""

        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                msg = f"{self.name} exited {self.proc.returncode}:\n{self.log()}"
                raise AssertionError(msg)
            return ready()

        wait_for(check, timeout, what)

    def log(self) -> str:
        """Everything the daemon wrote (stdout and stderr), all runs."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_ctr(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run the Go ``ctr -a <socket> <args>`` (not checked)."""
        require_binary(CTR)
        return subprocess.run(
            [CTR, "-a", self.address, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and return the exit status (killed after ``timeout``)."""
        if self.proc is None:
            msg = f"{self.name} not started"
            raise RuntimeError(msg)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.close_log()
        return code

    def kill(self) -> None:
        """Kill it if it still runs (fixture teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.close_log()

    def close_log(self) -> None:
        """Close this run's handle on the log file."""
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None


class Daemon(DaemonProcess):
    """Our daemon with ``<base>/root``, ``<base>/state`` and ``<base>/c.sock``.

    It loads exactly the plugin modules its environment names (entry-point
    autoload off, see :func:`daemon_env`), so a test does not depend on which
    distributions are installed. ``base`` must be short (unix socket paths are
    limited to 107 bytes).
    """

    def __init__(
        self, base: Path, *, config: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        super().__init__(base, "daemon.log")
        self.root = base / "root"
        self.state = base / "state"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = base / "config.toml"
            self.config_path.write_text(config)
        self.env = env if env is not None else daemon_env()
        self._log_offset = 0

    def args(self) -> list[str]:
        """The command line."""
        out = ["--root", str(self.root), "--state", str(self.state), "-a", self.address]
        if self.config_path is not None:
            out = ["--config", str(self.config_path), *out]
        return containerd_cmd(*out)

    def start(self, *, wait: bool = True) -> Self:
        """Start it (again); with ``wait``, return once it logged that it booted."""
        self._log_offset = len(self.log())
        self.spawn(self.args(), self.env)
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.kill()  # the caller's fixture has no daemon to stop yet
                raise
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for ``successfully booted`` in this run's log (AssertionError if it exits).

        The deadline is generous: a boot takes a second or two, but on a
        machine busy with the rest of the suite it has taken more than 15.
        """
        self.wait_until(
            lambda: "successfully booted" in self.log()[self._log_offset :],
            timeout,
            "daemon to boot",
        )

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the Go ``ctr -a <socket> <args>``; with ``check``, fail on a non-zero exit."""
        res = self.run_ctr(args, 30)
        if check and res.returncode != 0:
            msg = f"ctr {args} failed: {res.stderr}"
            raise AssertionError(msg)
        return res


MakeDaemon: TypeAlias = "Callable[..., Daemon]"
"""The type of a fixture that makes :class:`Daemon` objects."""


class RealContainerd(DaemonProcess):
    """containerd's Go daemon with ``<base>/root``, ``<base>/state`` and ``<base>/c.sock``.

    It gets its own config in ``base`` (the CRI plugin disabled, the ``opt``
    plugin pointed inside ``base``), so nothing outside it is touched.
    """

    name = "containerd"

    def __init__(self, base: Path) -> None:
        super().__init__(base, "containerd.log")
        self.config_path = base / "config.toml"

    def config(self) -> str:
        """The daemon's config (TOML, version 2)."""
        b = self.base
        return (
            "version = 2\n"
            f'root = "{b}/root"\n'
            f'state = "{b}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self.address}"\n'
            "[ttrpc]\n"
            f'  address = "{self.address}.ttrpc"\n'
            '[plugins."io.containerd.internal.v1.opt"]\n'
            f'  path = "{b}/opt"\n'
        )

    def start(self) -> Self:
        """Start the daemon and wait until its socket accepts connections."""
        require_binary(CONTAINERD)
        self.config_path.write_text(self.config())
        self.spawn([CONTAINERD, "--config", str(self.config_path)], self.environment())
        self.wait_until(lambda: socket_answers(self.address), WAIT_TIMEOUT, "containerd to listen")
        return self

    def environment(self) -> dict[str, str]:
        """The daemon's environment: ours without ``CONTAINERD_*`` variables."""
        return {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}

    def on_exit(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None:
            self.stop()

    def ctr(self, *args: str, namespace: str = "default") -> subprocess.CompletedProcess[str]:
        """Run the Go ``ctr -a <socket> -n <namespace> <args>`` (not checked)."""
        return self.run_ctr(["-n", namespace, *args], 60)


def check_plugin_module(module: ModuleType) -> None:
    """``module`` implements the core plugin hook and registers distinct plugins.

    Raises:
        AssertionError: it does not.
    """
    from pycontainerd.core.plugin import Registration

    hook = module.pycontainerd_plugins
    # pluggy recognises an implementation by the marker's attribute.
    assert hasattr(hook, "pycontainerd_impl"), f"{module.__name__}: not a hook implementation"  # noqa: S101
    registrations = list(hook())
    assert all(isinstance(r, Registration) for r in registrations), registrations  # noqa: S101
    uris = [r.uri for r in registrations]
    assert len(uris) == len(set(uris)), f"duplicate plugin URIs: {uris}"  # noqa: S101


def check_import_leaves_out(module: str, heavy: str) -> None:
    """Importing ``module`` in a fresh interpreter does not import ``heavy``.

    Raises:
        AssertionError: it does, with the probe's stderr.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    probe = f"import sys, {module}; assert {heavy!r} not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr.decode()  # noqa: S101


def load_hypothesis_profile() -> None:
    """Hypothesis without wall-clock deadlines (for a test suite's ``conftest.py``).

    The suites run with ``pytest -n auto`` on small CI machines next to real
    daemons; a per-example deadline there measures the machine's load, not the
    code. ``CI=true`` also derandomizes, so a CI failure reproduces locally with
    the same examples.
    """
    from hypothesis import settings

    settings.register_profile("pycontainerd", deadline=None, print_blob=True)
    settings.register_profile("pycontainerd-ci", deadline=None, print_blob=True, derandomize=True)
    settings.load_profile("pycontainerd-ci" if os.environ.get("CI") == "true" else "pycontainerd")


# -- daemons with a store, and with the runtime (the client, ctr and transfer tests) --

STORE_PLUGINS: Final = (
    "pycontainerd.daemon.plugin",
    "pycontainerd.events.plugin",
    "pycontainerd.content.plugin",
    "pycontainerd.snapshots.plugin",
    "pycontainerd.metadata.plugin",
)
"""The plugin modules of a daemon that stores (content, snapshots, metadata) and runs nothing."""
RUNTIME_PLUGINS: Final = (*STORE_PLUGINS, "pycontainerd.runtime.plugin")
""":data:`STORE_PLUGINS` plus the runtime (tasks and sandboxes on our shim)."""
TRANSFER_PLUGINS: Final = (*STORE_PLUGINS, "pycontainerd.transfer.plugin")
""":data:`STORE_PLUGINS` plus the Transfer service."""


def recorded_shim_pids(state: Path) -> set[int]:
    """The pids in the ``shim.pid`` files of the task bundles under a daemon's ``state``."""
    pids: set[int] = set()
    for f in state.glob("io.containerd.runtime.v2.task/*/*/shim.pid"):
        with contextlib.suppress(OSError, ValueError):
            pids.add(int(f.read_text()))
    return pids


def kill_shims(pids: Iterable[int], *, any_shim: bool = False) -> None:
    """SIGKILL those of ``pids`` that are our shims (``any_shim``: any shim, the Go one too)."""
    marker = b"shim" if any_shim else b"pycontainerd.runtime.shim"
    for pid in pids:
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


class ShimOwner(Protocol):
    """A daemon whose task bundles live under ``state`` (ours, or a stand-in for containerd)."""

    state: Path

    def kill(self) -> object:
        """Kill it (or nothing, where someone else stops it)."""
        ...


def kill_with_shims(daemon: ShimOwner, *, any_shim: bool = False) -> None:
    """Kill ``daemon``, then the shims it recorded before (see :func:`kill_shims`)."""
    pids = recorded_shim_pids(daemon.state)
    daemon.kill()
    kill_shims(pids, any_shim=any_shim)


@contextlib.contextmanager
def runtime_daemon(
    prefix: str, modules: Iterable[str] = RUNTIME_PLUGINS, *, extra: dict[str, str] | None = None
) -> Iterator[Daemon]:
    """Our started daemon on a new short base (``/tmp/<prefix>…``) loading ``modules``.

    On exit the daemon is killed, then the shims it left behind, and the base is removed.
    """
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix=prefix))
    daemon = Daemon(base, config="version = 2\n", env=daemon_env(modules, extra=extra))
    try:
        daemon.start()
        yield daemon
    finally:
        kill_with_shims(daemon, any_shim=True)
        shutil.rmtree(base, ignore_errors=True)


def busybox_layer(applets: Iterable[str], passwd: bytes = b"root:x:0:0:root:/:/bin/sh\n") -> bytes:
    """An uncompressed layer: ``bin/busybox``, applet links, ``etc/passwd``, empty mount points.

    ``bin/busybox`` is this host's ``/bin/busybox`` (busybox-static); each of
    ``applets`` is a symlink ``bin/<applet>`` to it.
    """
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "tmp", "proc", "sys", "dev", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        data = Path("/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in applets:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(passwd)
        tar.addfile(info, io.BytesIO(passwd))
    return raw.getvalue()


# -- OCI images built here (ctr and end-to-end tests, the critest harness) --

OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256_digest(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_image(
    layers: Sequence[bytes], config: object, *, architecture: str = "amd64"
) -> tuple[bytes, bytes]:
    """The config and manifest (JSON, keys sorted) of a linux image.

    ``layers`` are gzipped layer tars, bottom first; ``config`` is the image
    config's ``config`` member (what a container runs).
    """
    import gzip
    import json

    diff_ids = [sha256_digest(gzip.decompress(layer)) for layer in layers]
    image_config = {
        "architecture": architecture,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    cfg = json.dumps(image_config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(cfg), "size": len(cfg)},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}
            for layer in layers
        ],
    }
    return cfg, json.dumps(manifest, sort_keys=True).encode()


def write_oci_layout(
    path: Path, name: str, layers: Sequence[bytes], config: object, *, architecture: str = "amd64"
) -> tuple[bytes, bytes]:
    """Write the OCI image layout tar (``oci-layout``, ``index.json``, blobs) of :func:`oci_image`.

    The index names the image ``name`` (``io.containerd.image.name``, what
    ``ctr images import`` uses, and its tag as ``org.opencontainers.image.ref.name``).
    Returns the config and the manifest.
    """
    import io
    import json
    import tarfile

    cfg, manifest = oci_image(layers, config, architecture=architecture)
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": sha256_digest(manifest),
        "size": len(manifest),
        "platform": {"architecture": architecture, "os": "linux"},
        "annotations": {
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name.rpartition(":")[2],
        },
    }
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
    members = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps(index, sort_keys=True).encode(),
        **{f"blobs/sha256/{sha256_digest(b)[7:]}": b for b in (manifest, cfg, *layers)},
    }
    with tarfile.open(path, "w") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return cfg, manifest
