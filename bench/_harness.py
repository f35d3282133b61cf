"""What the side-by-side benchmarks share: the two daemons, the Go ``ctr``, gRPC, a table.

Each daemon runs on its own root, state and socket under a tmpfs (``/dev/shm``
when present), so the disk is the same (memory) for both. Both are driven by
the same clients: the Go ``ctr`` by absolute path, or our generated gRPC stubs
over the daemon's unix socket.

A :class:`Row` holds one metric for both daemons and its target, written as a
bound on ``ours / containerd's`` (``"<= 1.5x"``, ``">= 1.0x"``) or on our value
alone (``"<= 0.02"``); :func:`print_table` prints rows with the ratio and
whether the target is met. Benchmarks print; they never fail on a slow number.
"""

from __future__ import annotations

import contextlib
import operator
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

CTR = "/usr/bin/ctr"
GO_CONTAINERD = "/usr/bin/containerd"
NAMESPACE = "default"


def bytecode_on() -> None:
    """Let the Python processes this bench starts cache their bytecode, as installed code does.

    With ``PYTHONDONTWRITEBYTECODE=1`` in the environment (some shells set it)
    and no ``.pyc`` files in the tree, every fresh daemon and shim compiles
    everything it imports, a cost no installed pycontainerd pays. The cache goes
    to a temporary ``PYTHONPYCACHEPREFIX``, outside the tree, removed at exit.
    """
    import atexit

    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) and "PYTHONPYCACHEPREFIX" not in os.environ:
        cache = Path(tempfile.mkdtemp(prefix="pcdbench-pyc-"))
        atexit.register(shutil.rmtree, cache, ignore_errors=True)
        os.environ["PYTHONPYCACHEPREFIX"] = str(cache)


def tmpfs_dir() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix="pcdbench", dir=base))


def check_binaries(*others: str) -> str | None:
    """Why the benchmarks cannot run (a missing Go binary, or one of ``others``), or ``None``."""
    for binary in (CTR, GO_CONTAINERD):
        if not os.access(binary, os.X_OK):
            return f"bench: {binary} not installed (Debian package containerd)"
    for binary in others:
        if not os.access(binary, os.X_OK):
            return f"bench: {binary} not installed"
    return None


def parse_args(parser: argparse.ArgumentParser, *binaries: str) -> argparse.Namespace | None:
    """The command line; ``None``, said on stderr, when a binary the bench needs is missing.

    That is containerd's Go ``ctr`` and daemon, and each of ``binaries``.
    """
    args = parser.parse_args()
    if (missing := check_binaries(*binaries)) is not None:
        print(missing, file=sys.stderr)
        return None
    return args


def table_main(
    parser: argparse.ArgumentParser,
    make_rows: Callable[[argparse.Namespace], list[Row]],
    *binaries: str,
) -> int:
    """A bench's ``main``: :func:`parse_args`, measure, print the table; the exit status."""
    args = parse_args(parser, *binaries)
    if args is None:
        return 1
    print_table(make_rows(args))
    return 0


@dataclass
class Peer:
    """One daemon under test."""

    name: str
    command: Callable[[Path], list[str]]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    args: list[str] = field(default_factory=list)  # extra daemon flags (``--log-level``)
    base: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        assert self.base is not None
        return str(self.base / "c.sock")

    @property
    def root(self) -> Path:
        assert self.base is not None
        return self.base / "root"

    def start(self) -> float:
        """Start the daemon; return seconds until ``ctr version`` first succeeds."""
        self.base = tmpfs_dir()
        log = (self.base / "daemon.log").open("wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*self.command(self.base), *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        deadline = t0 + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {(self.base / 'daemon.log').read_text()}")
            if self.ctr("version").returncode == 0:
                return time.monotonic() - t0
            time.sleep(0.002)
        raise RuntimeError(f"{self.name} did not answer within 30 s")

    @property
    def log_path(self) -> Path:
        assert self.base is not None
        return self.base / "daemon.log"

    def ctr(
        self, *args: str, timeout: str = "2s", **kwargs: Any
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the Go ``ctr`` against this daemon (``kwargs`` go to ``subprocess.run``)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.run(
            [CTR, "-a", self.address, "--timeout", timeout, *args], check=False, **kwargs
        )

    def ctr_ok(self, *args: str, timeout: str = "120s", **kwargs: Any) -> bytes:
        """Like :meth:`ctr`, raising with ``ctr``'s stderr when it fails; returns stdout."""
        res = self.ctr(*args, timeout=timeout, **kwargs)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip() if res.stderr else ""
            raise RuntimeError(f"{self.name}: ctr {' '.join(args[:3])}: {err}")
        return res.stdout or b""

    def rss_mib(self) -> float:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def tree_rss_mib(self) -> float:
        """Resident memory of the daemon and every process below it (its helper processes)."""
        assert self.proc is not None
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry))
        total_kib, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            try:
                with open(f"/proc/{pid}/status") as fh:
                    total_kib += next(
                        (int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0
                    )
            except OSError:
                continue
        return total_kib / 1024

    def cpu_s(self) -> float:
        """User + system CPU seconds the daemon process has used so far."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.base is not None:
            shutil.rmtree(self.base, ignore_errors=True)
        self.proc = None
        self.base = None


def containerd_peer() -> Peer:
    def command(base: Path) -> list[str]:
        config = base / "config.toml"
        config.write_text('version = 2\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n')
        return [
            GO_CONTAINERD, "--config", str(config), "--root", str(base / "root"),
            "--state", str(base / "state"), "--address", str(base / "c.sock"),
        ]  # fmt: skip

    return Peer("containerd", command)


def pycontainerd_peer() -> Peer:
    def command(base: Path) -> list[str]:
        return [
            sys.executable, "-m", "pycontainerd.daemon", "--root", str(base / "root"),
            "--state", str(base / "state"), "--address", str(base / "c.sock"),
        ]  # fmt: skip

    return Peer("pycontainerd", command)


def peers() -> list[Peer]:
    """containerd first, then ours (the order every table uses)."""
    return [containerd_peer(), pycontainerd_peer()]


@contextlib.contextmanager
def running(peer: Peer) -> Iterator[float]:
    try:
        yield peer.start()
    finally:
        peer.stop()


@contextlib.contextmanager
def channel(peer: Peer) -> Iterator[Any]:
    """A synchronous gRPC channel to ``peer`` (our generated stubs work on it)."""
    import grpc

    options = [("grpc.max_receive_message_length", 64 << 20)]
    ch = grpc.insecure_channel(f"unix://{peer.address}", options=options)
    try:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch
    finally:
        ch.close()


def ns_metadata(namespace: str = NAMESPACE) -> tuple[tuple[str, str], ...]:
    return (("containerd-namespace", namespace),)


#: A blob with this label survives garbage collection without a lease.
GC_ROOT = {"containerd.io/gc.root": "bench"}


def write_blob(
    ch: Any,
    source: bytes | Path,
    *,
    ref: str,
    labels: dict[str, str] | None = None,
    namespace: str = NAMESPACE,
) -> str:
    """Write a blob (bytes, or a file streamed in 1 MiB chunks) through ``Content.Write``.

    The stream commits with the expected digest and ``labels``. Returns the
    digest; a blob that exists already is fine (``AlreadyExists`` is swallowed).
    """
    import hashlib

    import grpc

    from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc

    def chunks() -> Iterator[bytes]:
        if isinstance(source, bytes):
            yield source
            return
        with source.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk

    h = hashlib.sha256()
    total = 0
    for c in chunks():
        h.update(c)
        total += len(c)
    digest = "sha256:" + h.hexdigest()

    def requests() -> Iterator[Any]:
        offset = 0
        for c in chunks():
            yield content_pb2.WriteContentRequest(
                action=content_pb2.WRITE, ref=ref, total=total, offset=offset, data=c
            )
            offset += len(c)
        yield content_pb2.WriteContentRequest(
            action=content_pb2.COMMIT,
            ref=ref,
            total=total,
            offset=offset,
            expected=digest,
            labels=labels or {},
        )

    stub = content_pb2_grpc.ContentStub(ch)
    try:
        for _ in stub.Write(requests(), metadata=ns_metadata(namespace)):
            pass
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    return digest


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call of ``fn``."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- results ---------------------------------------------------------------------------

_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass
class Row:
    """One metric: containerd's value, ours, and the target.

    Attributes:
        name: metric name, with its unit as a suffix (``_s``, ``_ms``, ``_mib_s``).
        theirs: containerd's value (``None``: not measured or n/a).
        ours: our value (``None``: n/a; ``note`` says why).
        target: ``"<= 1.5x"`` bounds ``ours / theirs``; ``"<= 0.02"`` bounds ``ours``;
            ``""`` is informational.
        note: why a value is n/a, or what it means.
    """

    name: str
    theirs: float | None
    ours: float | None
    target: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.ours is None or not self.theirs:
            return None
        return self.ours / self.theirs

    @property
    def met(self) -> bool | None:
        if not self.target:
            return None
        op, bound = self.target.split()
        if bound.endswith("x"):
            value, limit = self.ratio, float(bound[:-1])
        else:
            value, limit = self.ours, float(bound)
        if value is None:
            return None
        return _OPS[op](value, limit)


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.3f}"


def print_table(rows: list[Row], file: Any = None) -> None:
    out = file or sys.stdout
    print(
        f"{'metric':<30}{'containerd':>12}{'pycontainerd':>14}{'ratio':>8}{'target':>10}  ok",
        file=out,
    )
    for r in rows:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        ok = {True: "yes", False: "NO", None: "-"}[r.met]
        line = f"{r.name:<30}{fmt(r.theirs):>12}{fmt(r.ours):>14}{ratio:>8}{r.target:>10}  {ok}"
        print(line + (f"  ({r.note})" if r.note else ""), file=out)
    out.flush()


def side_by_side(
    name: str,
    measure: Callable[[Peer], float | None],
    target: str = "",
) -> Row:
    """Run ``measure`` on a fresh containerd, then on a fresh pycontainerd."""
    theirs, ours = (measure(p) for p in peers())
    return Row(name, theirs, ours, target)
