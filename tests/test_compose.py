"""Pick-and-choose installs compose: wheels built from this checkout, installed into fresh venvs.

Every wheel of the workspace (and the third-party plugin distribution in
``tests/data/pcd-example-plugin``) is built once per session; the
third-party requirements, pinned by ``uv.lock``, are downloaded once into a
wheelhouse kept in pytest's cache. Each venv is then installed with
``--no-index`` from those two directories only, so a missing or extra
dependency between our distributions shows up here:

(a) daemon + events + content + snapshots + metadata (no runtime): the Go
    ``ctr`` pulls from a registry and lists the image; ``ctr run`` gets
    containerd's answer for an absent plugin;
(b) ``pycontainerd`` (the meta-distribution): ``make demo``'s script runs a
    container;
(c) ``pycontainerd-ctr`` alone: our ``ctr`` talks to a running daemon;
(d) the daemon plus a third-party plugin distribution: it is in
    ``plugins ls`` and serves.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.client.remotes.testing import Registry, build_image, require_registry
from pycontainerd.daemon.testing import CTR, Daemon, daemon_env, require_binary, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.slow, pytest.mark.network, pytest.mark.system]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = ROOT / "tests" / "data" / "pcd-example-plugin"
IMAGE_BOX = [
    "pycontainerd-daemon",
    "pycontainerd-events",
    "pycontainerd-content",
    "pycontainerd-snapshots",
    "pycontainerd-metadata",
]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def wheels(full_checkout: Path, uv: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every wheel of this checkout plus the example plugin's, built once per session."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
    out = tmp_path_factory.getbasetemp().parent / f"compose-wheels-{run_id}"
    with _locked(out.with_suffix(".lock")):
        if not (out / ".complete").exists():
            shutil.rmtree(out, ignore_errors=True)
            _run([uv, "build", "--all-packages", "--wheel", "--out-dir", str(out), "-q"],
                 cwd=full_checkout)  # fmt: skip
            _run([uv, "build", str(EXAMPLE_PLUGIN), "--wheel", "--out-dir", str(out), "-q"],
                 cwd=full_checkout)  # fmt: skip
            (out / ".complete").touch()
    return out


@pytest.fixture(scope="session")
def wheelhouse(
    full_checkout: Path,
    uv: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The third-party wheels ``uv.lock`` pins, downloaded once and kept in pytest's cache."""
    reqs = _run(
        [uv, "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--no-header",
         "--no-annotate", "--no-dev"],
        cwd=full_checkout,
    ).stdout  # fmt: skip
    key = hashlib.sha256(reqs.encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)  # absent with -p no:cacheprovider
    if cache is not None:
        house = Path(cache.mkdir(f"wheelhouse-{key}"))
    else:
        house = tmp_path_factory.getbasetemp().parent / f"wheelhouse-{key}"
        house.mkdir(parents=True, exist_ok=True)
    with _locked(house / ".lock"):
        if not (house / ".complete").exists():
            (house / "requirements.txt").write_text(reqs)
            with short_tempdir("pcp") as tools:  # a pip of its own: the workspace venv has none
                _run([sys.executable, "-m", "venv", str(tools / "v")])
                _run([str(tools / "v" / "bin" / "python"), "-m", "pip", "download", "-q",
                      "--only-binary=:all:", "-d", str(house),
                      "-r", str(house / "requirements.txt")])  # fmt: skip
            (house / ".complete").touch()
    return house


class Venv:
    """A fresh venv with only the named distributions (and what they require)."""

    def __init__(self, path: Path, uv: str, wheels: Path, wheelhouse: Path) -> None:
        self.path = path
        self.bin = path / "bin"
        _run([uv, "venv", "-q", "--python", sys.executable, str(path)])
        self._install = [
            uv, "pip", "install", "-q", "--python", str(self.bin / "python"), "--no-index",
            "--find-links", str(wheels), "--find-links", str(wheelhouse),
        ]  # fmt: skip

    def install(self, *names: str) -> Venv:
        _run([*self._install, *names])
        return self

    def distributions(self) -> set[str]:
        out = _run(
            [str(self.bin / "python"), "-c",
             "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] "
             "for d in m.distributions()))"],
        ).stdout  # fmt: skip
        return set(out.split())

    def env(self) -> dict[str, str]:
        """This machine's environment with the venv first on PATH and nothing of the workspace."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONTAINERD_", "PYCONTAINERD_", "PYTHON", "VIRTUAL_ENV"))
        }
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        return env


class VenvDaemon(Daemon):
    """A daemon run by a venv's ``containerd`` script, discovering that venv's plugins."""

    def __init__(self, base: Path, venv: Venv) -> None:
        super().__init__(base, env=venv.env())
        self.venv = venv

    def args(self) -> list[str]:
        own = ["--root", str(self.root), "--state", str(self.state), "-a", self.address]
        return [str(self.venv.bin / "containerd"), *own]


@pytest.fixture
def venv(tmp_path: Path, uv: str, wheels: Path, wheelhouse: Path) -> Venv:
    return Venv(tmp_path / "venv", uv, wheels, wheelhouse)


@pytest.fixture
def base() -> Iterator[Path]:
    with short_tempdir("pcc") as path:
        yield path


def _plugins(daemon: Daemon) -> dict[tuple[str, str], str]:
    rows = daemon.ctr("plugins", "ls").stdout.splitlines()[1:]
    return {(r.split()[0], r.split()[1]): r.split()[-1] for r in rows if r.strip()}


def test_a_image_box_without_runtime(venv: Venv, base: Path) -> None:
    require_binary(CTR)
    require_registry()
    venv.install(*IMAGE_BOX)
    installed = venv.distributions()
    assert {*IMAGE_BOX, "pycontainerd-core", "pycontainerd-api"} <= installed
    assert not {"pycontainerd-runtime", "pycontainerd-ctr", "pycontainerd-client"} & installed
    (base / "r").mkdir()
    (base / "d").mkdir()
    with Registry(base / "r").running() as registry, VenvDaemon(base / "d", venv) as daemon:
        ref = registry.seed("box/image", "1", build_image([{"etc/hello": b"hi\n"}]))
        plugins = _plugins(daemon)
        assert plugins[("io.containerd.grpc.v1", "images")] == "ok"
        assert plugins[("io.containerd.snapshotter.v1", "overlayfs")] == "ok"
        assert not [p for p in plugins if p[1] == "tasks" or "runtime" in p[0]]
        daemon.ctr("images", "pull", "--plain-http", ref)
        assert daemon.ctr("images", "ls", "-q").stdout.split() == [ref]
        res = daemon.ctr("run", "--rm", ref, "box1", "/bin/true", check=False)
        assert res.returncode == 1
        assert "unknown service containerd.services.tasks.v1.Tasks" in res.stderr


def test_b_meta_distribution_runs_the_demo(venv: Venv) -> None:
    if os.geteuid() != 0 or shutil.which("runc") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root and runc")
        pytest.skip("needs root and runc")
    venv.install("pycontainerd")
    installed = venv.distributions()
    standard = {"events", "content", "snapshots", "metadata", "runtime", "daemon", "ctr", "client"}
    assert {f"pycontainerd-{n}" for n in standard} <= installed
    assert "pycontainerd-snapshots-btrfs" not in installed
    for script in ("containerd", "ctr", "containerd-shim-pyrunc-v2"):
        assert (venv.bin / script).is_file(), script
    res = subprocess.run(
        [str(venv.bin / "python"), str(ROOT / "tools" / "demo.py")],
        capture_output=True,
        text=True,
        env=venv.env(),
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "the container said: hello from pycontainerd" in res.stdout
    assert "failed:            -" in res.stdout


def test_c_ctr_alone_talks_to_a_daemon(venv: Venv, base: Path) -> None:
    venv.install("pycontainerd-ctr")
    installed = venv.distributions()
    assert {"pycontainerd-ctr", "pycontainerd-client", "pycontainerd-config"} <= installed
    assert not {d for d in installed if d.startswith("pycontainerd-")} - {
        "pycontainerd-ctr",
        "pycontainerd-client",
        "pycontainerd-config",
        "pycontainerd-core",
        "pycontainerd-api",
    }
    modules = [f"pycontainerd.{n}.plugin" for n in ("daemon", "events", "content", "snapshots")]
    workspace_daemon = Daemon(base, env=daemon_env([*modules, "pycontainerd.metadata.plugin"]))
    with workspace_daemon as daemon:
        env = venv.env()
        ctr = [str(venv.bin / "ctr"), "-a", daemon.address]
        out = _run([*ctr, "version"], env=env).stdout
        assert "Server:" in out
        _run([*ctr, "namespaces", "create", "alone"], env=env)
        assert "alone" in _run([*ctr, "namespaces", "ls", "-q"], env=env).stdout.split()
        assert "io.containerd.grpc.v1" in _run([*ctr, "plugins", "ls"], env=env).stdout


def test_d_third_party_plugin_appears_and_serves(venv: Venv, base: Path) -> None:
    require_binary(CTR)
    venv.install("pycontainerd-daemon", "pcd-example-plugin")
    assert "pycontainerd-runtime" not in venv.distributions()
    with VenvDaemon(base, venv) as daemon:
        assert _plugins(daemon)[("io.containerd.grpc.v1", "example-greeter")] == "ok"
        import grpc

        with grpc.insecure_channel(f"unix://{daemon.address}") as channel:
            say: Any = channel.unary_unary("/pcdexample.v1.Greeter/Say")
            assert say(b"world", timeout=10) == b"hello world"
