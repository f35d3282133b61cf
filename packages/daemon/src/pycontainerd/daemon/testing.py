"""Test helpers: run a real daemon subprocess on its own root, state and socket.

For this package's tests and for cross-package end-to-end tests. A daemon
started here loads exactly the plugin modules it is given (entry-point
autoload off), so a test does not depend on which distributions are installed.
Importing this module does not import pytest; :func:`require_binary` does.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from types import TracebackType

CTR: Final = "/usr/bin/ctr"
"""containerd's Go ``ctr`` (Debian package), called by absolute path: ours shadows it on PATH."""

DEFAULT_MODULES: Final = ("pycontainerd.daemon.plugin",)


def require_binary(path: str) -> None:
    """Skip the test (fail it when ``CI=true``) if the system peer ``path`` is missing."""
    import pytest

    if not os.access(path, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is required under CI")
        pytest.skip(f"{path} not installed")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    msg = f"timed out waiting for {what}"
    raise AssertionError(msg)


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
    """The environment for a daemon that loads exactly ``modules`` as plugin modules."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*python_path, *filter(None, [env.get("PYTHONPATH")])])
    env["PYCONTAINERD_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYCONTAINERD_EXTRA_PLUGINS"] = ",".join(modules)
    env.pop("CONTAINERD_ADDRESS", None)
    env.update(extra or {})
    return env


def containerd_cmd(*args: str) -> list[str]:
    """``containerd <args>`` run with this interpreter."""
    return [sys.executable, "-m", "pycontainerd.daemon", *args]


class Daemon:
    """A daemon subprocess with ``<base>/root``, ``<base>/state`` and ``<base>/c.sock``.

    ``base`` must be short (unix socket paths are limited to 107 bytes).
    """

    def __init__(
        self, base: Path, *, config: str | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.base = base
        self.root = base / "root"
        self.state = base / "state"
        self.address = str(base / "c.sock")
        self.log_path = base / "daemon.log"
        self.config_path: Path | None = None
        if config is not None:
            self.config_path = base / "config.toml"
            self.config_path.write_text(config)
        self.env = env if env is not None else daemon_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._log_offset = 0

    def __enter__(self) -> Daemon:
        """Start it and wait for the boot (a daemon that does not boot is killed)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Kill it if it still runs."""
        self.kill()

    def args(self) -> list[str]:
        """The command line."""
        out = ["--root", str(self.root), "--state", str(self.state), "-a", self.address]
        if self.config_path is not None:
            out = ["--config", str(self.config_path), *out]
        return containerd_cmd(*out)

    def start(self, *, wait: bool = True) -> Daemon:
        """Start it (again); with ``wait``, return once it logged that it booted."""
        self._log_offset = len(self.log())
        self._log_file = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.args(), env=self.env, stdout=self._log_file, stderr=subprocess.STDOUT
        )
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

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                msg = f"daemon exited {self.proc.returncode}:\n{self.log()}"
                raise AssertionError(msg)
            return "successfully booted" in self.log()[self._log_offset :]

        wait_for(ready, timeout, "daemon to boot")

    def log(self) -> str:
        """Everything the daemon wrote (stdout and stderr), all runs."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the Go ``ctr -a <socket> <args>``."""
        require_binary(CTR)
        res = subprocess.run(
            [CTR, "-a", self.address, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check and res.returncode != 0:
            msg = f"ctr {args} failed: {res.stderr}"
            raise AssertionError(msg)
        return res

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and return the exit status (killed after ``timeout``)."""
        if self.proc is None:
            msg = "daemon not started"
            raise RuntimeError(msg)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._close_log()
        return code

    def kill(self) -> None:
        """Kill it if it still runs (fixture teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(OSError):
                self._log_file.close()
            self._log_file = None


MakeDaemon: TypeAlias = "Callable[..., Daemon]"
"""The type of a fixture that makes :class:`Daemon` objects."""
