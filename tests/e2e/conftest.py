"""End-to-end fixtures: our daemon in a short temporary directory, driven by the Go ``ctr``.

``daemon`` yields a started :class:`Daemon`; ``make_daemon`` makes more (or
configured) ones. Each daemon owns ``<dir>/root``, ``<dir>/state`` and the
socket ``<dir>/c.sock`` under a directory from ``tempfile.mkdtemp(dir="/tmp")``
(unix socket paths must stay under 108 bytes). It loads exactly the plugin
modules it is given (entry-point autoload off) and is stopped by its PID.
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import tarfile
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

import pytest

from pycontainerd.core.testing import STORE_PLUGINS, sha256_digest, short_tempdir, write_oci_layout
from pycontainerd.daemon import testing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping
    from pathlib import Path
    from typing import Self

CTR: Final = testing.CTR
"""containerd's Go ``ctr``, by absolute path (ours shadows it on PATH)."""

#: Plugin modules an end-to-end daemon loads: everything issues 5 and 6 need.
MODULES: Final = STORE_PLUGINS

MakeDaemon: TypeAlias = "Callable[..., Daemon]"
"""The type of the ``make_daemon`` fixture."""

BASE_CONFIG: Final = 'version = 2\n\n[debug]\n  level = "debug"\n'


class Daemon:
    """One of our daemons under ``base``, plus a Go ``ctr`` aimed at it.

    Attributes:
        base: the private directory (root, state, socket, log, config).
        address: the gRPC unix socket path.
        root: the daemon's ``--root``.
        state: the daemon's ``--state``.
    """

    def __init__(self, base: Path, *, config: str = "", modules: Iterable[str] = MODULES) -> None:
        self._proc = testing.Daemon(
            base,
            config=BASE_CONFIG + config,
            env=testing.daemon_env(tuple(modules)),
        )
        self.base = base
        self.address = self._proc.address
        self.root = self._proc.root
        self.state = self._proc.state

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs."""
        proc = self._proc.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def content_root(self) -> Path:
        """Where the local content store keeps blobs and ingests."""
        return self.root / "io.containerd.content.v1.content"

    def blobs_on_disk(self) -> set[str]:
        """Digests of every blob file in the content store."""
        try:
            names = os.listdir(self.content_root / "blobs" / "sha256")
        except FileNotFoundError:
            return set()
        return {"sha256:" + n for n in names}

    def commit_rooted(self, data: bytes, *, root: str, namespace: str = "default") -> str:
        """Commit ``data`` as a blob labelled ``containerd.io/gc.root=<root>``; its digest.

        One ``Content.Write`` with the label on the commit: ``ctr content ingest``
        followed by ``ctr content label`` leaves a window (ingest drops its lease
        on exit, with a synchronous collection) in which the blob may go.
        """
        import grpc

        from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc

        digest = sha256_digest(data)
        request = content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT,
            ref=f"rooted-{digest}",
            data=data,
            total=len(data),
            expected=digest,
            labels={"containerd.io/gc.root": root},
        )
        with grpc.insecure_channel(f"unix://{self.address}") as ch:
            stub = content_pb2_grpc.ContentStub(ch)
            list(stub.Write(iter([request]), metadata=(("containerd-namespace", namespace),)))
        return digest

    def start(self, *, wait: bool = True) -> Self:
        """Start the daemon; with ``wait``, return once it booted."""
        self._proc.start(wait=wait)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Stop it with ``sig`` (by PID) and return its exit status."""
        return self._proc.stop(sig)

    def kill9(self) -> None:
        """SIGKILL it (a crash) and reap it."""
        self._proc.stop(signal.SIGKILL)

    def restart(self, *, wait: bool = True) -> Self:
        """Stop (SIGTERM) if running, then start again on the same root, state and socket."""
        if self.pid is not None:
            self.stop()
        return self.start(wait=wait)

    def log(self) -> str:
        """Everything the daemon wrote, all runs."""
        return self._proc.log()

    def ctr(
        self,
        *args: str,
        namespace: str | None = None,
        input: bytes | str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``/usr/bin/ctr -a <address> [-n <namespace>] <args>``; never raises on failure."""
        testing.require_binary(CTR)
        argv = [CTR, "-a", self.address]
        if namespace is not None:
            argv += ["-n", namespace]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        full_env.update(env or {})
        data = input.encode() if isinstance(input, str) else input
        res = subprocess.run(
            [*argv, *args],
            input=data,
            capture_output=True,
            timeout=timeout,
            env=full_env,
            check=False,
        )
        return subprocess.CompletedProcess(
            res.args,
            res.returncode,
            res.stdout.decode(errors="replace"),
            res.stderr.decode(errors="replace"),
        )

    def ok(self, *args: str, **kwargs: object) -> str:
        """:meth:`ctr` that must succeed; returns its stdout."""
        res = self.ctr(*args, **kwargs)  # type: ignore[arg-type]
        if res.returncode != 0:
            msg = f"ctr {' '.join(args)} failed ({res.returncode}): {res.stderr}"
            raise AssertionError(msg)
        return res.stdout

    def kill(self) -> None:
        """Fixture teardown: kill it by PID if it still runs."""
        self._proc.kill()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh directory with a short path (for unix sockets), removed afterwards."""
    with short_tempdir("pcde2e") as path:
        yield path


@pytest.fixture
def make_daemon(short_dir: Path) -> Iterator[MakeDaemon]:
    """``make_daemon(config="...", name="d", start=True)`` -> a :class:`Daemon`.

    Every daemon made is killed (by PID) at the end of the test.
    """
    testing.require_binary(CTR)
    made: list[Daemon] = []

    def make(*, config: str = "", name: str = "d", start: bool = True) -> Daemon:
        base = short_dir / name
        base.mkdir()
        d = Daemon(base, config=config)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.kill()


@pytest.fixture
def daemon(make_daemon: MakeDaemon) -> Daemon:
    """A started daemon with the default configuration, past its startup collection.

    The GC scheduler collects once ``startup_delay`` after boot. On a loaded
    machine that can fall after a test's first ``ctr content ingest`` (an
    unreferenced blob, which the collection rightly removes), so tests start
    once it has run.
    """
    d = make_daemon()
    deadline = time.monotonic() + 30
    while "garbage collected" not in d.log():
        if time.monotonic() > deadline:
            msg = f"no startup collection within 30 s:\n{d.log()}"
            raise AssertionError(msg)
        time.sleep(0.02)
    return d


@dataclass(frozen=True, slots=True)
class OciImage:
    """An OCI image archive written by :func:`write_oci_archive`.

    Attributes:
        path: the tar file.
        name: the image name recorded in ``index.json``.
        manifest: digest of the manifest (the image's target).
        manifest_size: its size.
        blobs: digests of manifest, config and layers.
        size: manifest + config + layers, what ``ctr images ls`` sums up.
    """

    path: Path
    name: str
    manifest: str
    manifest_size: int
    blobs: tuple[str, ...]
    size: int


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """A gzipped tar of ``files`` (deterministic: fixed mtimes, no gzip timestamp)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def write_oci_archive(path: Path, name: str, layers: Iterable[bytes]) -> OciImage:
    """Write an OCI image layout tar (``oci-layout``, ``index.json``, ``blobs/``).

    Each of ``layers`` is the content of a file ``layer`` in its own gzipped
    layer tar. The index names the image with ``io.containerd.image.name``
    (what ``ctr images import`` uses) and ``org.opencontainers.image.ref.name``.
    """
    layer_list = [layer_tar({"layer": content}) for content in layers]
    config, manifest = write_oci_layout(path, name, layer_list, {"Cmd": ["/bin/true"]})
    blobs = [manifest, config, *layer_list]
    return OciImage(
        path=path,
        name=name,
        manifest=sha256_digest(manifest),
        manifest_size=len(manifest),
        blobs=tuple(dict.fromkeys(sha256_digest(b) for b in blobs)),
        size=sum(len(b) for b in blobs),
    )


@pytest.fixture
def oci_archive(tmp_path: Path) -> Callable[[str, Iterable[bytes]], OciImage]:
    """``oci_archive(name, layers)`` writes an OCI archive under tmp_path and describes it."""
    count = iter(range(1_000_000))

    def make(name: str, layers: Iterable[bytes]) -> OciImage:
        return write_oci_archive(tmp_path / f"image-{next(count)}.tar", name, layers)

    return make
