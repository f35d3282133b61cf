"""Our ``ctr run`` and ``ctr tasks`` against our daemon, with real runc; the Go ``ctr`` as witness.

One daemon (with the runtime) serves the whole module; each test uses its own
container ids. Images are built here offline from the system's busybox and
imported with the Go ``ctr`` (``--no-unpack`` for one, so our ``run`` unpacks
it itself).
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from pycontainerd.core.testing import busybox_layer, runtime_daemon, wait_for, write_oci_layout
from pycontainerd.runtime.testing import make_rootfs, require

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from pycontainerd.daemon.testing import Daemon

pytestmark = pytest.mark.system

GO_CTR = "/usr/bin/ctr"
IMAGE = "localhost/ctr-run-test/busybox:1"
IMAGE_NO_UNPACK = "localhost/ctr-run-test/busybox:packed"


def busybox_archive(path: Path, name: str, config: dict[str, object]) -> None:
    """An OCI archive of a one-layer image: ``bin/busybox`` and ``bin/sh``, ``bin/echo``..."""
    passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
    layer = busybox_layer(("sh", "echo", "cat", "sleep", "pwd"), passwd)
    write_oci_layout(path, name, [gzip.compress(layer, mtime=0)], config)


class Rig:
    """Our daemon plus both ctrs aimed at it."""

    def __init__(self, daemon: Daemon, base: Path) -> None:
        self.daemon = daemon
        self.base = base
        self.rootfs = base / "rootfs"

    def ours(
        self, *args: str, stdin: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        res = subprocess.run(
            [sys.executable, "-m", "pycontainerd.ctr", "-a", self.daemon.address, *args],
            input=stdin if stdin is not None else b"",
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        return subprocess.CompletedProcess(
            res.args, res.returncode, res.stdout.decode(), res.stderr.decode()
        )

    def go(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [GO_CTR, "-a", self.daemon.address, *args],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> str:
        res = self.ours(*args)
        assert res.returncode == 0, f"ctr {' '.join(args)}: {res.stderr}"
        return res.stdout

    def tasks(self) -> dict[str, str]:
        lines = self.ok("tasks", "ls").splitlines()[1:]
        return {line.split()[0]: line.split()[2] for line in lines if line.strip()}

    def cleanup(self, cid: str) -> None:
        self.go("tasks", "kill", "-s", "SIGKILL", cid)
        deadline = time.monotonic() + 10
        while self.tasks().get(cid) not in {None, "STOPPED"} and time.monotonic() < deadline:
            time.sleep(0.05)
        self.go("tasks", "rm", "-f", cid)
        self.go("containers", "rm", cid)


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    require(GO_CTR, "runc", "busybox")
    with runtime_daemon("crt-") as d:
        base = d.base
        make_rootfs(base / "rootfs")
        r = Rig(d, base)
        try:
            busybox_archive(
                base / "img.tar",
                IMAGE,
                {"Env": ["PATH=/bin", "FROM_IMAGE=1"], "Cmd": ["/bin/echo", "from the image"]},
            )
            busybox_archive(
                base / "packed.tar",
                IMAGE_NO_UNPACK,
                {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/tmp"},
            )
            assert r.go("images", "import", str(base / "img.tar")).returncode == 0
            res = r.go("images", "import", "--no-unpack", str(base / "packed.tar"))
            assert res.returncode == 0, res.stderr
            yield r
        finally:
            if d.proc is not None and d.proc.poll() is None:
                for cid in r.go("tasks", "ls", "-q").stdout.split():
                    r.go("tasks", "kill", "-s", "SIGKILL", cid)
                    r.go("tasks", "rm", "-f", cid)


@pytest.fixture
def cid(rig: Rig) -> Iterator[str]:
    """A fresh container id, cleaned up after the test."""
    name = "c-" + uuid.uuid4().hex[:10]
    yield name
    rig.cleanup(name)


# -- run ----------------------------------------------------------------------------------------


def test_run_rm_rootfs_prints_and_exits_with_the_status(rig: Rig, cid: str, tmp_path: Path) -> None:
    fifo_dir = tmp_path / "fifo"
    res = rig.ours(
        "run", "--rm", "--fifo-dir", str(fifo_dir), "--rootfs", str(rig.rootfs), cid,
        "/bin/sh", "-c", "echo hello; echo oops >&2; exit 3",
    )  # fmt: skip
    assert (res.returncode, res.stdout, res.stderr) == (3, "hello\n", "oops\n")
    assert cid not in rig.tasks()
    assert cid not in rig.ok("containers", "ls", "-q").split()
    assert list(fifo_dir.iterdir()) == []


def test_run_image_uses_its_config_and_rm_removes_the_snapshot(rig: Rig, cid: str) -> None:
    res = rig.ours("run", "--rm", IMAGE, cid)
    assert (res.returncode, res.stdout) == (0, "from the image\n"), res.stderr
    res = rig.ours(
        "run", "--rm", "--env", "FOO=bar", "--cwd", "/tmp", IMAGE, cid,
        "/bin/sh", "-c", 'echo "$FOO $FROM_IMAGE $PATH"; pwd',
    )  # fmt: skip
    assert res.stdout == "bar 1 /bin\n/tmp\n", res.stderr
    snapshots = rig.ok("snapshots", "ls")
    assert cid not in snapshots


def test_run_unpacks_an_image_imported_without_unpacking(rig: Rig, cid: str) -> None:
    res = rig.ours("run", "--rm", IMAGE_NO_UNPACK, cid, "/bin/sh", "-c", "pwd; echo $0")
    assert (res.returncode, res.stdout) == (0, "/tmp\n/bin/sh\n"), res.stderr


def test_run_copies_stdin_and_closes_it_at_eof(rig: Rig, cid: str) -> None:
    data = b"line one\nline two\n" * 2000
    res = rig.ours("run", "--rm", "--rootfs", str(rig.rootfs), cid, "/bin/cat", stdin=data)
    assert res.returncode == 0, res.stderr
    assert res.stdout.encode() == data


def test_run_env_file_mount_user_and_labels(rig: Rig, cid: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("from the host\n")
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nA=1\n\nB=two words\n")
    res = rig.ours(
        "run", "-d", "--env-file", str(env_file), "--label", "team=x", "--user", "nobody",
        "--mount", f"type=bind,src={shared},dst=/host,options=rbind:ro",
        IMAGE, cid, "/bin/sleep", "300",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    out = rig.ok(
        "tasks", "exec", "--exec-id", "x1", cid, "/bin/sh", "-c",
        'echo "$A|$B"; cat /host/f; busybox id -u; touch /host/g 2>/dev/null || echo ro',
    )  # fmt: skip
    assert out == "1|two words\nfrom the host\n65534\nro\n"
    info = json.loads(rig.ok("containers", "info", cid))
    assert info["Labels"] == {"team": "x"}


def test_run_forwards_signals_to_the_task(rig: Rig, cid: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pycontainerd.ctr", "-a", rig.daemon.address, "run", "--rm",
         "--rootfs", str(rig.rootfs), cid, "/bin/sh", "-c",
         'trap "echo got TERM; exit 7" TERM; echo ready; while true; do sleep 0.1; done'],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (7, b"got TERM\n"), err


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_run_tty_gives_a_terminal_of_the_local_size(rig: Rig, cid: str) -> None:
    master, slave = pty.openpty()
    _set_winsize(slave, 33, 111)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pycontainerd.ctr", "-a", rig.daemon.address, "run", "--rm", "-t",
         "--rootfs", str(rig.rootfs), cid, "/bin/sh", "-c",
         "busybox tty; busybox stty -a | busybox head -1; read line; echo got:$line; exit 5"],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    out = b""
    sent = False
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    out += os.read(master, 4096)
                except OSError:
                    break
            if not sent and b"rows 33; columns 111" in out:
                os.write(master, b"typed\r")
                sent = True
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = out.decode(errors="replace")
    assert "/dev/pts/" in text
    assert "rows 33; columns 111" in text
    assert "got:typed" in text
    assert proc.returncode == 5


# -- tasks --------------------------------------------------------------------------------------


def test_detached_task_lists_like_the_go_ctr(rig: Rig, cid: str) -> None:
    assert rig.ours("run", "-d", "--rootfs", str(rig.rootfs), cid, "/bin/sleep", "300").stdout == ""
    for args in (["tasks", "ls"], ["tasks", "ps", cid], ["t", "ls", "-q"]):
        ours, go = rig.ours(*args), rig.go(*args)
        assert (ours.returncode, ours.stdout) == (go.returncode, go.stdout), args
    assert rig.tasks()[cid] == "RUNNING"

    assert rig.ours("tasks", "exec", "--exec-id", "e1", cid, "/bin/echo", "hi").stdout == "hi\n"
    res = rig.ours("tasks", "exec", "--exec-id", "e2", cid, "/bin/sh", "-c", "exit 5")
    assert res.returncode == 5
    res = rig.ours(
        "tasks", "exec", "--exec-id", "e3", "--cwd", "/tmp", "--env", "Z=9", cid,
        "/bin/sh", "-c", "pwd; echo $Z",
    )  # fmt: skip
    assert res.stdout == "/tmp\n9\n"

    rig.ok("tasks", "pause", cid)
    ours, go = rig.ours("tasks", "ls"), rig.go("tasks", "ls")
    assert ours.stdout == go.stdout
    assert rig.tasks()[cid] == "PAUSED"
    rig.ok("tasks", "resume", cid)
    assert rig.tasks()[cid] == "RUNNING"

    ours_metrics = rig.ok("tasks", "metrics", cid).splitlines()
    go_metrics = rig.go("tasks", "metrics", cid).stdout.splitlines()
    assert ours_metrics[0].split() == go_metrics[0].split() == ["ID", "TIMESTAMP"]
    assert ours_metrics[1].split()[0] == cid
    assert [line.split()[0] for line in ours_metrics[2:] if line] == [
        line.split()[0] for line in go_metrics[2:] if line
    ]
    doc = json.loads(rig.ok("tasks", "metric", "--format", "json", cid))
    assert set(doc) == set(json.loads(rig.go("tasks", "metrics", "--format", "json", cid).stdout))

    refused = rig.ours("tasks", "rm", cid)
    assert refused.returncode == 1
    assert refused.stderr.endswith(
        "ctr: task must be stopped before deletion: running: failed precondition\n"
    )

    rig.ok("tasks", "kill", "-s", "SIGKILL", cid)
    wait_for(lambda: rig.tasks().get(cid) == "STOPPED", what="the task to stop")
    res = rig.ours("tasks", "rm", cid)
    assert res.returncode == 0
    assert "exit with non-zero exit code 137" in res.stderr
    assert cid not in rig.tasks()


def test_tasks_ps_shows_exec_details_like_the_go_ctr(rig: Rig, cid: str) -> None:
    rig.ok("run", "-d", "--rootfs", str(rig.rootfs), cid, "/bin/sleep", "300")
    rig.ok("tasks", "exec", "-d", "--exec-id", "bg", cid, "/bin/sleep", "300")
    wait_for(lambda: len(rig.go("tasks", "ps", cid).stdout.splitlines()) == 3, what="the exec")
    ours, go = rig.ours("tasks", "ps", cid), rig.go("tasks", "ps", cid)
    assert ours.stdout == go.stdout
    rig.ok("tasks", "kill", "--exec-id", "bg", "-s", "9", cid)
    wait_for(lambda: len(rig.go("tasks", "ps", cid).stdout.splitlines()) == 2, what="exec exit")
    assert rig.ours("tasks", "rm", "--exec-id", "bg", cid).returncode == 137


def test_kill_all_and_force_rm(rig: Rig, cid: str) -> None:
    rig.ok("run", "-d", "--rootfs", str(rig.rootfs), cid, "/bin/sleep", "300")
    rig.ok("tasks", "kill", "--all", "-s", "KILL", cid)
    wait_for(lambda: rig.tasks().get(cid) == "STOPPED", what="the task to stop")
    rig.ok("tasks", "rm", cid)
    rig.ok("tasks", "start", "-d", cid)
    assert rig.tasks()[cid] == "RUNNING"
    rig.ok("tasks", "rm", "-f", cid)
    assert cid not in rig.tasks()


def test_tasks_start_runs_a_created_container_in_the_foreground(rig: Rig, cid: str) -> None:
    script = rig.base / f"{cid}.sh"
    script.write_text("echo started; exit 4\n")
    res = rig.go("containers", "create", "--rootfs", str(rig.rootfs), cid, "/bin/sh",
                 f"/{script.name}")  # fmt: skip
    shutil.copy(script, rig.rootfs / script.name)
    assert res.returncode == 0, res.stderr
    res = rig.ours("tasks", "start", cid)
    assert (res.returncode, res.stdout) == (4, "started\n"), res.stderr
    assert cid not in rig.tasks()


def test_tasks_attach_gets_the_output_and_status(rig: Rig, cid: str) -> None:
    rig.ok("run", "-d", "--rootfs", str(rig.rootfs), cid, "/bin/sh", "-c",
           "read x; echo late $x; exit 6")  # fmt: skip
    res = rig.ours("tasks", "attach", cid, stdin=b"input\n")
    assert (res.returncode, res.stdout) == (6, "late input\n"), res.stderr
    assert cid not in rig.tasks()


def test_errors_match_the_go_ctr(rig: Rig, cid: str) -> None:
    rig.ok("run", "-d", "--rootfs", str(rig.rootfs), cid, "/bin/sleep", "300")
    cases = [
        ["tasks", "kill", "missing"],
        ["tasks", "ps", "missing"],
        ["tasks", "kill"],
        ["tasks", "kill", "-a", "--exec-id", "x", cid],
        ["tasks", "kill", "-s", "SIGNOPE", cid],
        ["tasks", "exec", "--exec-id", "e1", "missing", "/bin/true"],
        ["tasks", "metrics", "--format", "xml", cid],
        ["run", "--rm", "-d", IMAGE, "x"],
        ["run", IMAGE],
        ["run"],
        ["run", "--rm", "no.such/image:1", "x"],
        # The Go ctr parses --mount after preparing the snapshot and leaves it
        # behind; ours refuses before touching the daemon. Same text either way.
        ["run", "--rm", "--mount", "type=bind,bogus=1", IMAGE, f"{cid}-m1"],
        ["run", "--rm", "--mount", "nokey", IMAGE, f"{cid}-m2"],
    ]
    for args in cases:
        ours, go = rig.ours(*args), rig.go(*args)
        assert (ours.returncode, ours.stderr) == (go.returncode, go.stderr), args
    for leaked in (f"{cid}-m1", f"{cid}-m2"):
        rig.go("snapshots", "rm", leaked)
    rig.go("containers", "create", "--rootfs", str(rig.rootfs), f"{cid}-idle", "/bin/true")
    try:
        ours, go = rig.ours("tasks", "kill", f"{cid}-idle"), rig.go("tasks", "kill", f"{cid}-idle")
        assert (ours.returncode, ours.stderr) == (go.returncode, go.stderr)
    finally:
        rig.go("containers", "rm", f"{cid}-idle")


# -- containers create ---------------------------------------------------------------------------


def _info(rig: Rig, cid: str) -> dict[str, Any]:
    """``containers info`` by the Go ctr, with the id made neutral and the times dropped."""
    res = rig.go("containers", "info", cid)
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout.replace(cid, "ID"))
    for key in ("CreatedAt", "UpdatedAt"):
        doc.pop(key)
    return doc


def _diff(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON documents differ (paths with both values)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            d for k in sorted(a.keys() | b.keys()) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")
        ]
    if a != b:
        return [f"{path}: {a!r} != {b!r}"]
    return []


def _flag_view(doc: dict[str, Any]) -> dict[str, Any]:
    """The parts of a container record that ``containers create``'s flags decide."""
    spec = doc["Spec"]
    process = spec["process"]
    return {
        "record": {k: doc[k] for k in ("ID", "Image", "Snapshotter", "SnapshotKey")},
        "runtime": doc["Runtime"]["Name"],
        "labels": {k: v for k, v in (doc["Labels"] or {}).items() if "stop-signal" not in k},
        "args": process["args"],
        "cwd": process["cwd"],
        "env": [e for e in process.get("env", []) if not e.startswith("PATH=")],
        "root": spec["root"],
        "annotation": (spec.get("annotations") or {}).get("k"),
        "privileged": "CAP_SYS_ADMIN" in process["capabilities"]["bounding"],
    }


def test_containers_create_matches_the_go_ctr(rig: Rig, cid: str, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(
        json.dumps(
            {
                "ociVersion": "1.0.2-dev",
                "process": {"args": ["/bin/echo", "from file"], "cwd": "/", "env": ["A=1"],
                            "user": {"uid": 0, "gid": 0}},
                "root": {"path": str(rig.rootfs)},
                "annotations": {"kept": "yes"},
            }
        )
    )  # fmt: skip
    variants = {
        "rootfs": ["--rootfs", "--label", "a=b", "--env", "X=1", "--cwd", "/tmp",
                   "--annotation", "k=v", "--read-only", str(rig.rootfs), "{id}", "/bin/echo",
                   "hi"],
        "image": ["--snapshotter-label", "s=1", "--privileged", IMAGE, "{id}"],
        "config": ["--config", str(spec_file), "--label", "l=1", "--runtime",
                   "io.containerd.other.v1", "--env", "IGNORED=1", "{id}"],
    }  # fmt: skip
    for name, template in variants.items():
        mine, theirs = f"{cid}-{name}-o", f"{cid}-{name}-g"
        try:
            res = rig.ours("containers", "create", *(a.format(id=mine) for a in template))
            assert res.returncode == 0, (name, res.stderr)
            res = rig.go("containers", "create", *(a.format(id=theirs) for a in template))
            assert res.returncode == 0, (name, res.stderr)
            ours, go = _info(rig, mine), _info(rig, theirs)
            if name != "config":
                # The generated spec's defaults (runtime options, label annotations,
                # device rules, capabilities) come from the client's spec builder,
                # shared with ``run``: compare what the command's flags decide.
                ours, go = _flag_view(ours), _flag_view(go)
            diff = _diff(ours, go)
            assert not diff, (name, "\n".join(diff))
        finally:
            rig.go("containers", "rm", mine, theirs)
    # A created container runs: our rootfs record, started by our tasks start.
    rig.ok("containers", "create", "--rootfs", str(rig.rootfs), cid, "/bin/echo", "created")
    res = rig.ours("tasks", "start", cid)
    assert (res.returncode, res.stdout) == (0, "created\n"), res.stderr


def test_containers_create_errors_match_the_go_ctr(rig: Rig, cid: str, tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text("{}")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    cases = [
        ["containers", "create"],
        ["containers", "create", "--rootfs", str(rig.rootfs)],
        ["containers", "create", "--config", str(spec_file), cid, "extra"],
        ["containers", "create", "--config", str(spec_file)],
        ["containers", "create", "--config", str(tmp_path / "missing.json"), cid],
        ["containers", "create", "no.such/image:1", cid],
        ["containers", "create", "--mount", "nokey", IMAGE, cid],
    ]
    for args in cases:
        ours, go = rig.ours(*args), rig.go(*args)
        assert (ours.returncode, ours.stderr) == (go.returncode, go.stderr), args
    assert cid not in rig.go("containers", "ls", "-q").stdout.split()
    # Go's JSON error detail is its own; the text before it is upstream's.
    ours = rig.ours("containers", "create", "--config", str(bad), cid)
    prefix = (
        "ctr: decoding spec config file failed, current supported OCI runtime-spec : v1.0.2-dev: "
    )
    assert ours.returncode == 1
    assert ours.stderr.startswith(prefix), ours.stderr
