"""The README's tutorial runs, async and sync, against our daemon and against containerd.

Its ``python`` blocks are collected in order; those starting with ``# async``
run as one program with top-level ``await`` (as ``python -m asyncio`` does),
those starting with ``# sync`` as another. Each runs in a fresh interpreter
with ``CONTAINERD_ADDRESS``, ``CONTAINERD_NAMESPACE`` (its own) and
``TUTORIAL_IMAGE`` (a busybox image in a docker-registry on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pycontainerd.client.testing import RealContainerd
from pycontainerd.core.testing import RUNTIME_PLUGINS
from pycontainerd.daemon.testing import Daemon, daemon_env, require_binary, short_tempdir

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.system, pytest.mark.slow]

README = Path(__file__).resolve().parents[1] / "README.md"
RUNNER = """
import ast, asyncio, json, sys
blocks = json.load(sys.stdin)
scope = {"__name__": "__tutorial__"}
async def main():
    for number, source in blocks:
        code = compile(source, f"README block {number}", "exec",
                       flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        result = eval(code, scope)
        if result is not None:
            await result
if sys.argv[1] == "async":
    asyncio.run(main())
else:
    for number, source in blocks:
        exec(compile(source, f"README block {number}", "exec"), scope)
"""


def tutorial_blocks(form: str) -> list[tuple[int, str]]:
    """The README's ``python`` blocks of ``form`` (``async`` or ``sync``), numbered in order."""
    blocks = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)
    return [(i, b) for i, b in enumerate(blocks, 1) if b.startswith(f"# {form}\n")]


def test_the_two_forms_mirror_each_other() -> None:
    asyncs, syncs = tutorial_blocks("async"), tutorial_blocks("sync")
    assert len(asyncs) == len(syncs) >= 7

    def calls(source: str) -> list[str]:
        return re.findall(r"\.(\w+)\(", source.replace("await ", "").replace("async ", ""))

    for (_, a), (_, s) in zip(asyncs, syncs, strict=True):
        assert calls(a) == calls(s)


@pytest.fixture(scope="module")
def ours() -> Iterator[str]:
    require_binary("/usr/sbin/runc")
    with short_tempdir("prd") as base, Daemon(base, env=daemon_env(RUNTIME_PLUGINS)) as daemon:
        yield daemon.address


@pytest.fixture(scope="module")
def theirs() -> Iterator[str]:
    with short_tempdir("prg") as base, RealContainerd(base) as daemon:
        yield daemon.address


def run_tutorial(form: str, address: str, image: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
    env.update(
        CONTAINERD_ADDRESS=address,
        CONTAINERD_NAMESPACE=f"tutorial-{uuid.uuid4().hex[:8]}",
        TUTORIAL_IMAGE=image,
    )
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, form],
        input=json.dumps(tutorial_blocks(form)),
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def check_output(out: str, image: str) -> None:
    lines = out.splitlines()
    assert lines[0].startswith("server ")
    assert lines[1].startswith(f"pulled {image} sha256:")
    assert "done" in lines[1] or "exists" in lines[1]
    assert lines[2:4] == ["unpacked True", f"images ['{image}']"]
    assert lines[4:8] == ["line 1", "line 2", "line 3", "exit status 0"]
    assert lines[8:10] == ["hello from exec", "exec exit 0"]
    assert lines[10].startswith("processes ")
    assert int(lines[10].split()[1]) >= 1
    assert lines[11] == "status PAUSED"
    assert lines[12] == "/tasks/exit tutorial-sleeper 137"
    assert lines[13] == "exit status 137"
    assert lines[14] == "leased [('content', True)]"
    assert lines[15] == "read back True 20"
    assert len(lines) == 16, out


@pytest.mark.parametrize("form", ["async", "sync"])
def test_tutorial_against_our_daemon(form: str, ours: str, image_ref: str) -> None:
    check_output(run_tutorial(form, ours, image_ref), image_ref)


@pytest.mark.parametrize("form", ["async", "sync"])
def test_tutorial_against_containerd(form: str, theirs: str, image_ref: str) -> None:
    check_output(run_tutorial(form, theirs, image_ref), image_ref)
