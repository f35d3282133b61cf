"""``ctr --help`` and help of a subcommand never run must not import grpc."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
from pycontainerd.ctr.main import main
sys.argv = ["ctr", *{args!r}]
try:
    main()
except SystemExit:
    pass
heavy = [m for m in ("grpc", "google.protobuf", "pycontainerd.api", "pycontainerd.client.client",
                     "httpx")
         if m in sys.modules]
print("HEAVY=" + ",".join(heavy))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["version", "--help"],
        ["namespaces", "--help"],
        ["ns", "ls", "--help"],
        ["images", "pull", "--help"],
        ["images", "push", "--help"],
        ["content", "fetch", "--help"],
        ["install", "--help"],
    ],
)
def test_help_imports_no_grpc(args: list[str]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip().endswith("HEAVY="), out


def test_root_help_lists_upstream_commands_and_aliases() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pycontainerd.ctr", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for row in (
        "plugins, plugin",
        "images, image, i",
        "namespaces, namespace, ns",
        "snapshots, snapshot",
    ):
        assert row in out


def test_unreachable_daemon_is_a_ctr_error(tmp_path: object) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pycontainerd.ctr",
            "-a",
            "/tmp/no-such-daemon.sock",
            "--connect-timeout",
            "200ms",
            "namespaces",
            "ls",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert (
        proc.stderr == 'ctr: failed to dial "/tmp/no-such-daemon.sock": context deadline exceeded\n'
    )
