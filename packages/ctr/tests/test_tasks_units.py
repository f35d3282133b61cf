"""``ctr run`` / ``ctr tasks`` pieces that need no daemon: flags, wire decoding, stdio, users."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner

from pycontainerd.client.containers import ImageConfig, resolve_user, rootfs_file
from pycontainerd.client.tasks import FifoSet, Metric, StdioCopier, parse_signal
from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError
from pycontainerd.core.types import AnyValue, Mount
from pycontainerd.ctr.commands.run import parse_mount, read_env_file, spec_options
from pycontainerd.ctr.commands.tasks import format_process_info
from pycontainerd.ctr.common import UsageError
from pycontainerd.ctr.main import cli
from pycontainerd.ctr.metrics import cgroup_v1_metrics, go_time, write_metrics_table

if TYPE_CHECKING:
    from pathlib import Path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(num << 3 | 2) + _varint(len(value)) + value
    return _varint(num << 3) + _varint(value)


V1 = (
    _field(2, _field(1, 3) + _field(2, 100))
    + _field(3, _field(1, _field(1, 500) + _field(4, _varint(200) + _varint(300))))
    + _field(4, _field(18, 4096) + _field(7, 11) + _field(33, _field(1, 1 << 30) + _field(2, 777)))
)


def test_v2_metrics_decode_and_table() -> None:
    from pycontainerd.api.types.cgroups.v2 import metrics_pb2
    from pycontainerd.ctr.metrics import cgroup_v2_metrics

    m = metrics_pb2.Metrics()
    m.pids.current = 2
    m.cpu.usage_usec = 10
    m.memory.anon = 5
    m.memory.usage = 300
    data = m.SerializeToString()
    assert cgroup_v2_metrics(data) == {
        "pids": {"current": 2},
        "cpu": {"usage_usec": 10},
        "memory": {"anon": 5, "usage": 300},
    }
    out = io.StringIO()
    write_metrics_table(
        out,
        Metric(
            id="t2",
            timestamp=datetime(2024, 1, 2, tzinfo=UTC),
            data=AnyValue(type_url="io.containerd.cgroups.v2.Metrics", value=data),
        ),
    )
    table = [line.split() for line in out.getvalue().splitlines()[4:]]
    assert table[:3] == [["pids.current", "2"], ["pids.limit", "0"], ["cpu.usage_usec", "10"]]
    assert ["memory.usage", "300"] in table


def test_malformed_metrics_are_a_clear_error() -> None:
    with pytest.raises(UsageError, match="malformed metrics"):
        cgroup_v1_metrics(b"\x0a\xff")


def test_parse_mount_accepts_upstream_keys() -> None:
    assert parse_mount("type=bind,src=/a,dst=/b,options=rbind:ro") == {
        "type": "bind",
        "source": "/a",
        "destination": "/b",
        "options": ["rbind", "ro"],
    }
    assert parse_mount('"source=/x,y",destination=/z')["source"] == "/x,y"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=bind,nokey", "invalid mount specification: expected key=val"),
        ("type=bind,bogus=1", 'mount option "bogus" not supported'),
    ],
)
def test_parse_mount_rejects_bad_specs(text: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError) as excinfo:
        parse_mount(text)
    assert str(excinfo.value) == message


def test_parse_signal_follows_moby() -> None:
    assert parse_signal("SIGKILL") == 9
    assert parse_signal("term") == 15
    assert parse_signal("64") == 64
    for bad in ("SIGNOPE", "0", "-1", ""):
        with pytest.raises(InvalidArgumentError, match="invalid signal"):
            parse_signal(bad)


def test_env_file_skips_blank_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("A=1\n\n# no\n  B=2 3\n")
    assert read_env_file(str(path)) == ["A=1", "  B=2 3"]
    with pytest.raises(InvalidArgumentError, match="env file"):
        read_env_file(str(tmp_path / "missing"))


def test_spec_options_apply_in_order() -> None:
    from pycontainerd.client.oci import generate_spec

    opts = spec_options(
        args=("/bin/true",),
        env=("A=2",),
        env_file="",
        mounts=("type=bind,src=/s,dst=/d",),
        cwd="/w",
        tty=True,
        privileged=False,
        net_host=True,
        read_only=True,
        memory_limit=1 << 20,
        cpus=0.5,
        hostname="h",
        annotations=("k=v",),
        allow_new_privs=True,
    )
    spec = generate_spec("ns", "id", *opts)
    proc = spec["process"]
    assert proc["args"] == ["/bin/true"]
    assert proc["cwd"] == "/w"
    assert proc["terminal"] is True
    assert "A=2" in proc["env"]
    assert proc["noNewPrivileges"] is False
    assert spec["root"]["readonly"] is True
    assert spec["hostname"] == "h"
    assert spec["annotations"] == {"k": "v"}
    assert spec["linux"]["resources"]["memory"]["limit"] == 1 << 20
    assert spec["linux"]["resources"]["cpu"] == {"quota": 50000, "period": 100000}
    assert "network" not in {n["type"] for n in spec["linux"]["namespaces"]}
    assert any(m["destination"] == "/d" for m in spec["mounts"])


def test_v1_metrics_decode_and_table() -> None:
    doc = cgroup_v1_metrics(V1)
    assert doc["pids"] == {"current": 3, "limit": 100}
    assert doc["cpu"]["usage"] == {"total": 500, "per_cpu": [200, 300]}
    assert doc["memory"]["total_cache"] == 4096
    assert doc["memory"]["pg_pg_in"] == 11
    assert doc["memory"]["usage"] == {"limit": 1 << 30, "usage": 777}
    metric = Metric(
        id="t1",
        timestamp=datetime(2024, 1, 2, 3, 4, 5, 120000, tzinfo=UTC),
        data=AnyValue(type_url="io.containerd.cgroups.v1.Metrics", value=V1),
    )
    out = io.StringIO()
    write_metrics_table(out, metric)
    lines = out.getvalue().splitlines()
    assert [line.rstrip() for line in lines] == [
        "ID    TIMESTAMP",
        "t1    2024-01-02 03:04:05.12 +0000 UTC",
        "",
        "METRIC                   VALUE",
        "memory.usage_in_bytes    777",
        "memory.limit_in_bytes    1073741824",
        "memory.stat.cache        4096",
        "cpuacct.usage            500",
        "cpuacct.usage_percpu     [200 300]",
        "pids.current             3",
        "pids.limit               100",
    ]
    assert lines[0].endswith("    ")  # Go's tabwriter pads the trailing cell too


def test_metrics_of_an_unknown_type_is_an_error() -> None:
    metric = Metric(id="t", timestamp=datetime.now(UTC), data=AnyValue(type_url="x.Y"))
    with pytest.raises(InvalidArgumentError, match="cannot convert metric data"):
        write_metrics_table(io.StringIO(), metric)


def test_go_time_trims_the_fraction() -> None:
    assert go_time(datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)) == "2024-05-06 07:08:09 +0000 UTC"


def test_process_info_column() -> None:
    assert format_process_info(None) == "-"
    details = AnyValue(type_url="containerd.runc.v1.ProcessDetails", value=_field(1, b"e1"))
    assert format_process_info(details) == "&ProcessDetails{ExecID:e1,XXX_unrecognized:[],}"


def test_chain_id_is_the_oci_identity() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert ImageConfig(diff_ids=(a,)).chain_id == a
    top = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert ImageConfig(diff_ids=(a, b)).chain_id == top
    assert ImageConfig().chain_id == ""


def test_users_resolve_from_the_rootfs(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    assert resolve_user("app", rootfs_path=str(tmp_path)) == (1000, 1001)
    assert resolve_user("app:staff", rootfs_path=str(tmp_path)) == (1000, 50)
    assert resolve_user("7:8") == (7, 8)
    with pytest.raises(NotFoundError, match="no user 'ghost'"):
        resolve_user("ghost", rootfs_path=str(tmp_path))
    with pytest.raises(InvalidArgumentError):
        resolve_user(":5")


def test_rootfs_file_reads_overlay_layers_top_first(tmp_path: Path) -> None:
    upper, lower1, lower2 = (tmp_path / n for n in ("upper", "l1", "l2"))
    for d in (upper, lower1, lower2):
        (d / "etc").mkdir(parents=True)
    (lower2 / "etc" / "passwd").write_text("old\n")
    (lower1 / "etc" / "passwd").write_text("new\n")
    mount = Mount(
        type="overlay",
        source="overlay",
        options=(f"upperdir={upper}", f"lowerdir={lower1}:{lower2}", "workdir=/w"),
    )
    assert rootfs_file([mount], "", "etc/passwd") == "new\n"
    (upper / "etc" / ".wh.passwd").write_text("")
    assert rootfs_file([mount], "", "etc/passwd") is None


def test_fifos_carry_output_to_a_local_fd(tmp_path: Path) -> None:
    fifos = FifoSet.create("p1", root=str(tmp_path), stdin=False)
    assert fifos.stdin == ""
    assert os.path.basename(fifos.stdout) == "p1-stdout"
    r, w = os.pipe()
    copier = StdioCopier(fifos, stdout=w, stderr=w)
    copier.start_output()

    def shim_side() -> None:
        for path, data in ((fifos.stdout, b"out\n"), (fifos.stderr, b"err\n")):
            fd = os.open(path, os.O_WRONLY)
            os.write(fd, data)
            os.close(fd)

    threading.Thread(target=shim_side).start()
    assert copier.wait_output(10)
    os.close(w)
    assert sorted(os.read(r, 100).splitlines()) == [b"err", b"out"]
    os.close(r)
    fifos.remove()
    assert not os.path.exists(fifos.dir)


def test_a_terminal_has_no_stderr_fifo(tmp_path: Path) -> None:
    fifos = FifoSet.create("p2", root=str(tmp_path), terminal=True)
    assert (bool(fifos.stdin), bool(fifos.stdout), fifos.stderr) == (True, True, "")
    copier = StdioCopier(fifos, stdout=1)
    copier.start_output()
    copier.unblock()
    assert copier.wait_output(10)
    fifos.remove()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--rm", "-d", "img", "id"],
            "flags --detach and --rm cannot be specified together",
        ),
        (["run"], "image ref must be provided"),
        (["run", "img"], "container id must be provided"),
        (["tasks", "kill"], "container id must be provided"),
        (["tasks", "kill", "-a", "--exec-id", "e", "c"], "specify an exec-id or all; not both"),
        (["tasks", "kill", "-s", "NOPE", "c"], "invalid signal: NOPE"),
        (["tasks", "ps"], "container id must be provided"),
        (["tasks", "exec", "--exec-id", "e"], "container id must be provided"),
    ],
)
def test_usage_errors_come_before_any_connection(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["-a", "/nonexistent/c.sock", *args])
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == message
