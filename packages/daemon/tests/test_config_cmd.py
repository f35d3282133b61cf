from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from pycontainerd.daemon.testing import containerd_cmd, daemon_env


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = daemon_env(
        ("pycontainerd.daemon.plugin", "pcd_daemon_testplugins"),
        python_path=[str(Path(__file__).resolve().parent)],
    )
    return subprocess.run(
        containerd_cmd(*args), capture_output=True, text=True, env=env, timeout=60, check=False
    )


def body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#")).strip()


def test_config_default_loads_back_identically(tmp_path: Path) -> None:
    default = run("config", "default")
    assert default.returncode == 0, default.stderr
    doc = tomllib.loads(default.stdout)
    assert doc["version"] == 2
    assert doc["plugins"]["io.containerd.internal.v1.opt"]["path"].endswith("/opt")
    assert "/opt/containerd" not in default.stdout
    path = tmp_path / "config.toml"
    path.write_text(default.stdout)
    dumped = run("--config", str(path), "config", "dump")
    assert dumped.returncode == 0, dumped.stderr
    assert tomllib.loads(body(dumped.stdout)) == doc


def test_config_dump_deep_merges_two_imports(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        'version = 2\n[debug]\nlevel = "debug"\n'
        '[plugins."io.containerd.snapshotter.v1.testsnap"]\na = 1\nkeep = "a"\n'
    )
    (tmp_path / "b.toml").write_text(
        'version = 2\n[plugins."io.containerd.snapshotter.v1.testsnap"]\nb = 2\nkeep = "b"\n'
        '[plugins."io.containerd.internal.v1.opt"]\npath = "/srv/opt"\n'
    )
    main = tmp_path / "config.toml"
    main.write_text('version = 2\nimports = ["a.toml", "b.toml"]\noom_score = -10\n')
    res = run("--config", str(main), "config", "dump")
    assert res.returncode == 0, res.stderr
    doc = tomllib.loads(body(res.stdout))
    assert doc["oom_score"] == -10
    assert doc["debug"]["level"] == "debug"
    assert doc["plugins"]["io.containerd.snapshotter.v1.testsnap"] == {"a": 1, "b": 2, "keep": "b"}
    assert doc["plugins"]["io.containerd.internal.v1.opt"] == {"path": "/srv/opt"}
    comments = [line for line in res.stdout.splitlines() if line.startswith("#")]
    assert comments == [
        f"# merged from {tmp_path / name}" for name in ("config.toml", "a.toml", "b.toml")
    ]


def test_config_dump_missing_file_is_an_error(tmp_path: Path) -> None:
    res = run("--config", str(tmp_path / "nope.toml"), "config", "dump")
    assert res.returncode == 1
    assert res.stderr.startswith("containerd: ")
    assert "nope.toml" in res.stderr
