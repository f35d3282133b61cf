"""Test helpers for the runtime: real runc, a real containerd, a busybox rootfs.

Used by this package's tests (and usable by end-to-end tests): the
``containerd`` fixture starts containerd's own daemon in a short temporary
directory with ``containerd-shim-pyrunc-v2`` first on its PATH.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.core.testing import wait_for as wait_for  # noqa: PLC0414 - re-exported

if TYPE_CHECKING:
    from collections.abc import Iterator

CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
SHIM = "containerd-shim-pyrunc-v2"
RUNTIME = "io.containerd.pyrunc.v2"


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


def is_our_shim(pid: int) -> bool:
    """Whether ``pid`` is a live pyrunc shim server."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pycontainerd.runtime.shim" in cmdline


@dataclass
class Containerd:
    """A private containerd with our shim on its PATH."""

    dir: Path
    proc: subprocess.Popen[bytes]
    rootfs: Path
    env: dict[str, str]

    def restart(self) -> None:
        """SIGTERM containerd (its shims and tasks keep running) and start it again."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        sock = self.dir / "c.sock"
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        self.proc = _spawn_containerd(self.dir, self.env)
        wait_for(lambda: sock.exists() or self.proc.poll() is not None, what="containerd socket")

    @property
    def address(self) -> str:
        return str(self.dir / "c.sock")

    @property
    def state(self) -> Path:
        return self.dir / "state"

    def bundle(self, task_id: str, namespace: str = "default") -> Path:
        return self.state / "io.containerd.runtime.v2.task" / namespace / task_id

    def ctr(
        self, *args: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [CTR, "-a", self.address, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            pytest.fail(f"ctr {' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res

    def shim_pids(self) -> set[int]:
        pids: set[int] = set()
        for f in self.state.glob("io.containerd.runtime.v2.task/*/*/shim.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids.add(int(f.read_text()))
        return {p for p in pids if is_our_shim(p)}


def _spawn_containerd(d: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with (d / "containerd.log").open("ab") as log:
        return subprocess.Popen(
            [CONTAINERD, "--config", str(d / "config.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


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
        (d / "config.toml").write_text(
            f'version = 2\nroot = "{d}/root"\nstate = "{d}/state"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{d}/c.sock"\n'
        )
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["PYCONTAINERD_SHIM_LINGER"] = "0.2"
    ctd = Containerd(d, _spawn_containerd(d, env), rootfs, env)
    proc = ctd.proc
    try:
        wait_for(
            lambda: (d / "c.sock").exists() or proc.poll() is not None, what="containerd socket"
        )
        if proc.poll() is not None:
            pytest.fail(f"containerd exited: {(d / 'containerd.log').read_text()}")
        yield ctd
    finally:
        _teardown(ctd)


def _teardown(ctd: Containerd) -> None:
    if ctd.proc.poll() is None:
        for line in ctd.ctr("tasks", "ls", "-q").stdout.split():
            ctd.ctr("tasks", "kill", "-s", "SIGKILL", line)
            with contextlib.suppress(subprocess.TimeoutExpired):
                ctd.ctr("tasks", "rm", "-f", line, timeout=10)
    shims = ctd.shim_pids()
    if ctd.proc.poll() is None:
        ctd.proc.send_signal(signal.SIGTERM)
        try:
            ctd.proc.wait(10)
        except subprocess.TimeoutExpired:
            ctd.proc.kill()
            ctd.proc.wait()
    for pid in shims:
        if is_our_shim(pid):
            os.kill(pid, signal.SIGKILL)
    runc_root = ctd.state / "runc" / "default"
    if runc_root.exists():
        listed = subprocess.run(
            ["runc", "--root", str(runc_root), "list", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        for cid in listed.stdout.split():
            subprocess.run(
                ["runc", "--root", str(runc_root), "delete", "--force", cid], check=False
            )
    shutil.rmtree(ctd.dir, ignore_errors=True)
