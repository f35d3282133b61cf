"""Test helpers for the runtime: real runc, a real containerd, a busybox rootfs.

Used by this package's tests (and usable by end-to-end tests): the
``containerd`` fixture starts containerd's own daemon in a short temporary
directory with ``containerd-shim-pyrunc-v2`` first on its PATH.
"""

from __future__ import annotations

import contextlib
import os
import pty
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest

from pycontainerd.core.testing import CONTAINERD as CONTAINERD  # noqa: PLC0414 - re-exported
from pycontainerd.core.testing import CTR as CTR  # noqa: PLC0414 - re-exported
from pycontainerd.core.testing import (
    RUNTIME_PLUGINS,
    Daemon,
    RealContainerd,
    daemon_env,
)
from pycontainerd.core.testing import kill_shims as kill_shims  # noqa: PLC0414 - re-exported
from pycontainerd.core.testing import kill_with_shims as kill_with_shims  # noqa: PLC0414
from pycontainerd.core.testing import recorded_shim_pids as recorded_shim_pids  # noqa: PLC0414
from pycontainerd.core.testing import wait_for as wait_for  # noqa: PLC0414 - re-exported

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

SHIM = "containerd-shim-pyrunc-v2"
RUNTIME = "io.containerd.pyrunc.v2"
GO_SHIM = "/usr/bin/containerd-shim-runc-v2"

DAEMON_MODULES = RUNTIME_PLUGINS
"""The plugin modules of our daemon when it runs containers (``core.testing.RUNTIME_PLUGINS``)."""

#: Our daemon's config with ``io.containerd.runc.v2`` mapped to containerd's Go shim.
GO_SHIM_CONFIG = (
    'version = 2\n[plugins."io.containerd.runtime.v2.task".shims]\n'
    '"io.containerd.runc.v2" = "containerd-shim-runc-v2"\n'
)


def require(*binaries: str) -> None:
    """Skip (fail under CI=true) when a system binary is missing."""
    for binary in binaries:
        if shutil.which(binary) is None:
            msg = f"{binary} is not installed"
            if os.environ.get("CI") == "true":
                pytest.fail(msg)
            pytest.skip(msg)
    if os.geteuid() != 0:
        msg = "running containers needs root"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def shim_script() -> str | None:
    """The installed ``containerd-shim-pyrunc-v2`` console script, if there is one."""
    path = Path(sys.executable).parent / SHIM
    return str(path) if path.exists() else None


def install_shim(bindir: Path) -> Path:
    """Put ``containerd-shim-pyrunc-v2`` into ``bindir``.

    A link to the installed console script; where there is none (a test
    runner with its own interpreter and no console scripts), a small wrapper
    that runs ``python -m pycontainerd.runtime.shim`` with this interpreter
    and import path.
    """
    target = bindir / SHIM
    script = shim_script()
    if script is not None:
        target.symlink_to(script)
        return target
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    target.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(pythonpath)} "
        f'exec {shlex.quote(sys.executable)} -m pycontainerd.runtime.shim "$@"\n'
    )
    target.chmod(0o755)
    return target


def make_rootfs(path: Path) -> Path:
    """A busybox-static root filesystem at ``path``."""
    (path / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", path / "bin" / "busybox")
    for name in ("sh", "echo", "sleep", "true", "cat", "ls", "ps"):
        (path / "bin" / name).symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc"):
        (path / d).mkdir()
    return path


def rss_pss_kib(pid: int) -> tuple[int, int]:
    """RSS and PSS of ``pid`` in KiB (``/proc/<pid>/smaps_rollup``; for the benches)."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss, pss


def is_our_shim(pid: int) -> bool:
    """Whether ``pid`` is a live pyrunc shim server."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pycontainerd.runtime.shim" in cmdline


def runc_containers(root: Path) -> list[str]:
    """The ids of the runc containers under the runc ``--root`` ``root``."""
    if not root.exists():
        return []
    res = subprocess.run(
        ["runc", "--root", str(root), "list", "-q"], capture_output=True, text=True, check=False
    )
    return res.stdout.split()


def delete_runc_containers(root: Path, suffix: str = "") -> None:
    """Force-delete the runc containers under the runc ``--root`` ``root`` (teardown).

    Only those whose id ends with ``suffix``: a test's own where the root is
    machine-wide (the Go shim's).
    """
    for cid in runc_containers(root):
        if cid.endswith(suffix):
            subprocess.run(
                ["runc", "--root", str(root), "delete", "--force", cid],
                capture_output=True,
                check=False,
            )


@contextlib.contextmanager
def our_daemon(
    prefix: str, *, go_shim: bool = False, env: dict[str, str] | None = None
) -> Iterator[tuple[Daemon, Path]]:
    """Our daemon with the runtime's plugins (:data:`DAEMON_MODULES`), not started yet.

    In a short temporary directory ``/tmp/<prefix>...`` (removed afterwards)
    that others may traverse (0711, as a daemon's parents are: a user-namespace
    root must pass through), with a busybox rootfs in it. ``go_shim`` maps
    ``io.containerd.runc.v2`` to containerd's Go shim; ``env`` is added to the
    daemon's environment. Yields ``(daemon, rootfs)``; the caller starts the
    daemon and cleans up its tasks and shims.
    """
    pytest.importorskip("pycontainerd.daemon")
    require(CTR, "runc", "busybox")
    if go_shim:
        require(GO_SHIM)
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix=prefix))
    try:
        base.chmod(0o711)
        rootfs = make_rootfs(base / "rootfs")
        config = GO_SHIM_CONFIG if go_shim else "version = 2\n"
        yield Daemon(base, config=config, env=daemon_env(DAEMON_MODULES, extra=env)), rootfs
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def on_a_terminal(argv: Sequence[str]) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``argv`` in a new session, a pseudo-terminal its stdin, stdout and stderr.

    Yields ``(the process, the terminal's master fd)``. Afterwards the process
    is killed if it still runs, and the master is closed.
    """
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        yield proc, master
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


class CtrTarget(Protocol):
    """A daemon the Go ``ctr`` can talk to (ours, or containerd)."""

    @property
    def address(self) -> str: ...

    def log(self) -> str: ...


class CtrRig:
    """A daemon, a busybox rootfs and the Go ``ctr`` against the daemon.

    ``tag`` makes container ids unique to one test (the Go shim's runc root is
    machine-wide).
    """

    def __init__(self, daemon: CtrTarget, rootfs: Path, tag: str) -> None:
        self.daemon = daemon
        self.rootfs = rootfs
        self.tag = tag

    def id(self, name: str) -> str:
        """A container id unique to this test."""
        return f"{name}-{self.tag}"

    def ctr(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """``ctr -a <socket> <args>`` (not checked)."""
        return subprocess.run(
            [CTR, "-a", self.daemon.address, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def ok(self, *args: str) -> str:
        """``ctr <args>``'s stdout; the test fails (with the daemon's log) on an error."""
        res = self.ctr(*args)
        if res.returncode != 0:
            pytest.fail(f"ctr {' '.join(args)}: {res.stderr}\n{self.daemon.log()}")
        return res.stdout

    def kill_tasks(self) -> None:
        """SIGKILL and delete every task of the default namespace (teardown)."""
        for cid in self.ctr("tasks", "ls", "-q").stdout.split():
            self.ctr("tasks", "kill", "-s", "SIGKILL", cid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.ctr("tasks", "rm", "-f", cid, timeout=10)


class Containerd(RealContainerd):
    """A private containerd with our shim first on its PATH (the ``containerd`` fixture)."""

    def __init__(self, base: Path, rootfs: Path, env: dict[str, str]) -> None:
        super().__init__(base)
        self.rootfs = rootfs
        self.env = env

    @property
    def dir(self) -> Path:
        """Its directory: config, log, socket, root and state."""
        return self.base

    @property
    def state(self) -> Path:
        return self.base / "state"

    def environment(self) -> dict[str, str]:
        """Its environment: ours, with the shim's directory first on PATH."""
        return self.env

    def restart(self) -> None:
        """SIGTERM containerd (its shims and tasks keep running) and start it again."""
        self.stop(timeout=30)
        with contextlib.suppress(FileNotFoundError):
            Path(self.address).unlink()
        self.start()

    def bundle(self, task_id: str, namespace: str = "default") -> Path:
        return self.state / "io.containerd.runtime.v2.task" / namespace / task_id

    def ctr(
        self, *args: str, namespace: str = "default", timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        res = self.run_ctr(["-n", namespace, *args], timeout)
        if check and res.returncode != 0:
            pytest.fail(f"ctr {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def shim_pids(self) -> set[int]:
        return {p for p in recorded_shim_pids(self.state) if is_our_shim(p)}


@pytest.fixture
def containerd() -> Iterator[Containerd]:
    """A real containerd in a short temporary directory, our shim first on PATH."""
    require(CONTAINERD, CTR, "runc", "busybox")
    d = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    try:
        bindir = d / "bin"
        bindir.mkdir()
        install_shim(bindir)
        rootfs = make_rootfs(d / "rootfs")
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["PYCONTAINERD_SHIM_LINGER"] = "0.2"
    ctd = Containerd(d, rootfs, env)
    try:
        ctd.start()
        yield ctd
    finally:
        _teardown(ctd)


def _teardown(ctd: Containerd) -> None:
    running = ctd.proc is not None and ctd.proc.poll() is None
    if running:
        for line in ctd.ctr("tasks", "ls", "-q").stdout.split():
            ctd.ctr("tasks", "kill", "-s", "SIGKILL", line)
            with contextlib.suppress(subprocess.TimeoutExpired):
                ctd.ctr("tasks", "rm", "-f", line, timeout=10)
    shims = ctd.shim_pids()
    if running:
        ctd.stop(timeout=10)
    kill_shims(shims)
    delete_runc_containers(ctd.state / "runc" / "default")
    shutil.rmtree(ctd.dir, ignore_errors=True)
