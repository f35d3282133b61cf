"""Test helpers: run containerd's Go daemon on a private root, state and socket.

For this package's tests, ``pycontainerd-ctr``'s and end-to-end tests that
compare against upstream. The daemon gets its own config in a short
directory (unix socket paths are limited to 107 bytes), the CRI plugin
disabled and the ``opt`` plugin pointed inside that directory, so nothing
outside it is touched. Importing this module does not import pytest or grpc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from typing import IO, TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

CONTAINERD: Final = "/usr/bin/containerd"
"""containerd's Go daemon (Debian package), by absolute path: ours shadows it on PATH."""
CTR: Final = "/usr/bin/ctr"
"""containerd's Go ``ctr``, by absolute path for the same reason."""


def require_binary(path: str) -> None:
    """Skip the test (fail it when ``CI=true``) if the system peer ``path`` is missing."""
    import pytest

    if not os.access(path, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is required under CI")
        pytest.skip(f"{path} not installed")


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    msg = f"timed out waiting for {what}"
    raise AssertionError(msg)


def socket_answers(path: str) -> bool:
    """Whether something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


class RealContainerd:
    """containerd's Go daemon with ``<base>/root``, ``<base>/state`` and ``<base>/c.sock``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.address = str(base / "c.sock")
        self.config_path = base / "config.toml"
        self.log_path = base / "containerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

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

    def start(self) -> RealContainerd:
        """Start the daemon and wait until its socket accepts connections."""
        require_binary(CONTAINERD)
        self.config_path.write_text(self.config())
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [CONTAINERD, "--config", str(self.config_path)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")},
        )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                msg = f"containerd exited {self.proc.returncode}:\n{self.log()}"
                raise AssertionError(msg)
            return socket_answers(self.address)

        wait_for(ready, what="containerd to listen")
        return self

    def __enter__(self) -> RealContainerd:
        """Start it; stopped again if it does not come up."""
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop it."""
        self.stop()

    def log(self) -> str:
        """What the daemon logged."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def ctr(self, *args: str, namespace: str = "default") -> subprocess.CompletedProcess[str]:
        """Run the Go ``ctr -a <socket> -n <namespace> <args>`` (not checked)."""
        require_binary(CTR)
        return subprocess.run(
            [CTR, "-a", self.address, "-n", namespace, *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 15 s."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            with contextlib.suppress(OSError):
                self._log.close()
            self._log = None
