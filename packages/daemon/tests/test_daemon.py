"""A real daemon subprocess driven by containerd's Go ctr."""

from __future__ import annotations

import asyncio
import json
import os
import re
import select
import signal
import socket
import stat
import subprocess
from typing import TYPE_CHECKING, Any, cast

import pytest

from pycontainerd.daemon.testing import CTR, containerd_cmd, require_binary, wait_for

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.daemon.testing import MakeDaemon

pytestmark = pytest.mark.system


def plugin_rows(out: str) -> list[tuple[str, str, str, str]]:
    lines = [line.split() for line in out.strip().splitlines()]
    assert lines[0] == ["TYPE", "ID", "PLATFORMS", "STATUS"]
    return [(r[0], r[1], r[2], r[3]) for r in lines[1:]]


def test_version_uuid_survives_restart(make_daemon: MakeDaemon) -> None:
    require_binary(CTR)
    d = make_daemon().start()
    out = d.ctr("version").stdout
    from pycontainerd.daemon.version import server_version

    server = out.split("Server:", 1)[1]
    assert f"Version:  {server_version()}" in server
    assert "Revision: 0123456789abcdef" in server
    uuid = re.search(r"UUID: ([0-9a-f-]{36})", server)
    assert uuid is not None
    stored = (d.root / "io.containerd.grpc.v1.introspection" / "uuid").read_text().strip()
    assert stored == uuid.group(1)
    assert d.stop() == 0
    assert not os.path.exists(d.address)
    assert not os.path.exists(d.address + ".ttrpc")
    d.start()
    again = re.search(r"UUID: ([0-9a-f-]{36})", d.ctr("version").stdout)
    assert again is not None
    assert again.group(1) == uuid.group(1)


def test_plugins_ls_status_order_and_details(make_daemon: MakeDaemon) -> None:
    d = make_daemon().start()
    rows = plugin_rows(d.ctr("plugins", "ls").stdout)
    ids = [r[1] for r in rows]
    # init order: providers before requirers, otherwise by URI
    assert ids.index("content") < ids.index("testsnap")
    assert ids.index("introspection-service") < ids.index("introspection")
    status = {(r[0], r[1]): r[3] for r in rows}
    assert status[("io.containerd.snapshotter.v1", "skipper")] == "skip"
    assert status[("io.containerd.internal.v1", "broken")] == "error"
    assert status[("io.containerd.grpc.v1", "version")] == "ok"
    assert status[("io.containerd.internal.v1", "opt")] == "ok"
    assert {r[1]: r[2] for r in rows}["testsnap"] == "linux/amd64"

    detail = d.ctr("plugins", "ls", "-d", "id==opt").stdout
    assert "ID:          opt" in detail
    assert re.search(r"Exports:\s*\n\s+path\s+/\S+/opt\n", detail)

    broken = d.ctr("plugins", "ls", "-d", "id==broken").stdout
    assert "Error:" in broken
    assert re.search(r"Code:\s+Unknown", broken)
    assert re.search(r"Message:\s+broken on purpose", broken)

    skipper = d.ctr("plugins", "ls", "-d", "id==skipper").stdout
    assert "not on a skipfs filesystem: skip plugin" in skipper
    assert "[broken on purpose]" not in d.log()
    assert (
        'msg="failed to load plugin io.containerd.internal.v1.broken" error="broken on purpose"'
        in d.log()
    )
    assert (
        'msg="loading plugin \\"io.containerd.internal.v1.opt\\"..." type=io.containerd.internal.v1'
        in d.log()
    )


def test_plugin_filters_union_intersection_and_errors(make_daemon: MakeDaemon) -> None:
    d = make_daemon().start()
    union = plugin_rows(d.ctr("plugins", "ls", "type~=snapshot", "id==content").stdout)
    assert sorted((r[0], r[1]) for r in union) == [
        ("io.containerd.content.v1", "content"),
        ("io.containerd.snapshotter.v1", "skipper"),
        ("io.containerd.snapshotter.v1", "testsnap"),
    ]
    inter = plugin_rows(d.ctr("plugins", "ls", "id==content,type==io.containerd.content.v1").stdout)
    assert [(r[0], r[1]) for r in inter] == [("io.containerd.content.v1", "content")]
    none = plugin_rows(d.ctr("plugins", "ls", "id==content,type==io.containerd.grpc.v1").stdout)
    assert none == []
    quiet = d.ctr("plugins", "ls", "-q", "type==io.containerd.snapshotter.v1").stdout.split()
    assert sorted(quiet) == ["skipper", "testsnap"]

    bad = d.ctr("plugins", "ls", "id=overlayfs", check=False)
    assert bad.returncode == 1
    assert "invalid argument" in bad.stderr
    assert ">|=|<" in bad.stderr  # the offending position is marked


def test_required_plugin_failure_stops_startup(make_daemon: MakeDaemon) -> None:
    config = 'version = 2\nrequired_plugins = ["io.containerd.internal.v1.broken"]\n'
    d = make_daemon(config=config).start(wait=False)
    assert d.proc is not None
    assert d.proc.wait(30) == 1
    assert (
        "containerd: load required plugin io.containerd.internal.v1.broken: broken on purpose"
        in d.log()
    )
    assert not os.path.exists(d.address)

    config = 'version = 2\nrequired_plugins = ["io.containerd.nope.v1.x"]\n'
    d2 = make_daemon(config=config, name="d2").start(wait=False)
    assert d2.proc is not None
    assert d2.proc.wait(30) == 1
    assert "containerd: required plugin [io.containerd.nope.v1.x] not included" in d2.log()


def test_disabled_plugin_oom_score_and_socket_owner(make_daemon: MakeDaemon) -> None:
    root = os.geteuid() == 0
    config = (
        'version = 2\ndisabled_plugins = ["io.containerd.internal.v1.broken"]\n'
        "oom_score = 123\n" + ("[grpc]\ngid = 1\n" if root else "")
    )
    d = make_daemon(config=config).start()
    ids = [r[1] for r in plugin_rows(d.ctr("plugins", "ls").stdout)]
    assert "broken" not in ids
    assert "opt" in ids
    assert d.proc is not None
    with open(f"/proc/{d.proc.pid}/oom_score_adj") as fh:
        assert fh.read().strip() == "123"
    if root:
        assert os.stat(d.address).st_gid == 1
        assert os.stat(d.address + ".ttrpc").st_gid == 1  # ttrpc follows grpc's owner


def test_sigterm_removes_sockets_and_exits_zero(make_daemon: MakeDaemon) -> None:
    d = make_daemon().start()
    mode = os.stat(d.address).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660
    assert stat.S_IMODE(os.stat(d.address + ".ttrpc").st_mode) == 0o660
    assert stat.S_IMODE(d.root.stat().st_mode) == 0o700
    assert stat.S_IMODE(d.state.stat().st_mode) == 0o711
    assert d.stop(signal.SIGTERM) == 0
    assert not os.path.exists(d.address)
    assert not os.path.exists(d.address + ".ttrpc")
    d2 = make_daemon(name="d2").start()
    assert d2.stop(signal.SIGINT) == 0
    assert not os.path.exists(d2.address)


def test_sd_notify_ready_after_listeners_and_stopping_on_sigterm(
    make_daemon: MakeDaemon, short_dir: Path
) -> None:
    """READY=1 once the sockets accept (before the boot line), STOPPING=1 on SIGTERM."""
    import socket

    notify = str(short_dir / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(notify)
        sock.settimeout(60)
        d = make_daemon(env={"NOTIFY_SOCKET": notify}).start()
        assert sock.recv(64) == b"READY=1"
        assert os.path.exists(d.address)
        assert "successfully booted" in d.log()
        assert d.stop(signal.SIGTERM) == 0
        assert sock.recv(64) == b"STOPPING=1"
    # a notify socket that is gone is only logged
    d2 = make_daemon(name="d2", env={"NOTIFY_SOCKET": str(short_dir / "gone.sock")}).start()
    assert d2.stop(signal.SIGTERM) == 0
    assert "sd notification failed" in d2.log()


async def test_sigterm_lets_in_flight_calls_finish(
    make_daemon: MakeDaemon, short_dir: Path
) -> None:
    import grpc.aio

    marker = short_dir / "started"
    d = make_daemon(env={"PCD_TEST_MARKER": str(marker)}).start()
    assert d.proc is not None
    async with grpc.aio.insecure_channel(f"unix:{d.address}") as channel:
        sleep: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/pcd.test.Slow/Sleep"
        )
        call = sleep(b"1.5", timeout=20)
        await asyncio.to_thread(wait_for, marker.exists, 10.0, "the call to start")
        d.proc.send_signal(signal.SIGTERM)
        assert await call == b"done"
    assert await asyncio.to_thread(d.stop) == 0
    assert not await asyncio.to_thread(os.path.exists, d.address)


async def test_taking_the_stop_handlers_back_never_restores_the_default_action(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # after shutdown the daemon ignores SIGTERM/SIGINT, so a client's second signal as
    # it ends cannot kill it; the default action must not be in force even for the
    # moment between the loop giving its handler back and the signal being ignored
    from pycontainerd.daemon.server import Daemon

    stops = (signal.SIGTERM, signal.SIGINT)
    loop = asyncio.get_running_loop()
    before = {sig: signal.getsignal(sig) for sig in stops}
    real = signal.signal
    set_to: list[tuple[int, object]] = []

    def record(sig: int, handler: Any) -> Any:
        set_to.append((sig, handler))
        return real(sig, handler)

    for sig in stops:
        loop.add_signal_handler(sig, lambda: None)
    monkeypatch.setattr(signal, "signal", record)
    try:
        Daemon._ignore_stop_signals(cast("Daemon", None))
    finally:
        monkeypatch.undo()
        for sig in stops:
            loop.remove_signal_handler(sig)
            signal.signal(sig, before[sig])
    assert [sig for sig, _ in set_to] == list(stops)
    assert all(handler is signal.SIG_IGN for _, handler in set_to), set_to


def test_sigterm_during_hung_plugin_init(make_daemon: MakeDaemon) -> None:
    d = make_daemon(env={"PCD_TEST_HANG": "1"}).start(wait=False)
    wait_for(lambda: "io.containerd.internal.v1.broken" in d.log(), what="the hung init")
    assert d.proc is not None
    assert d.proc.poll() is None
    assert d.stop(signal.SIGTERM, timeout=10) == 0
    assert "successfully booted" not in d.log()
    assert not os.path.exists(d.address)


def test_live_socket_is_not_taken_over(make_daemon: MakeDaemon) -> None:
    first = make_daemon(name="a").start()
    second = make_daemon(name="b")
    second.address = first.address
    second.start(wait=False)
    assert second.proc is not None
    assert second.proc.wait(30) == 1
    assert f"containerd: {first.address}: address already in use by a running server" in (
        second.log()
    )
    first.ctr("version")  # still served by the first daemon
    assert first.stop() == 0


def test_stale_socket_is_replaced(make_daemon: MakeDaemon) -> None:
    d = make_daemon()
    d.base.mkdir(exist_ok=True)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(d.address)
    stale.close()  # the file stays, nobody listens
    d.start()
    d.ctr("version")


def test_sigusr1_writes_stacks_file(make_daemon: MakeDaemon, short_dir: Path) -> None:
    tmpdir = short_dir / "tmp"
    tmpdir.mkdir()
    d = make_daemon(env={"TMPDIR": str(tmpdir)}).start()
    assert d.proc is not None
    d.proc.send_signal(signal.SIGUSR1)
    d.proc.send_signal(signal.SIGPIPE)  # ignored
    stacks = tmpdir / f"containerd.{d.proc.pid}.stacks.log"
    wait_for(lambda: "goroutine stack dump written to" in d.log(), what="stack dump")
    text = stacks.read_text()
    assert "thread " in text
    assert "task " in text
    assert "=== BEGIN goroutine stack dump ===" in d.log()
    assert d.proc.poll() is None
    assert d.stop() == 0


def test_json_log_format_and_level(make_daemon: MakeDaemon) -> None:
    d = make_daemon(config='version = 2\n[debug]\nformat = "json"\nlevel = "debug"\n').start()
    d.ctr("version")
    assert d.stop() == 0
    lines = [json.loads(line) for line in d.log().splitlines() if line.startswith("{")]
    assert lines
    for obj in lines:
        assert list(obj) == sorted(obj)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", obj["time"])
    msgs = [o["msg"] for o in lines]
    assert "starting containerd" in msgs
    assert any(m.startswith("containerd successfully booted in ") for m in msgs)
    assert any(o["level"] == "debug" for o in lines)


def test_text_log_lines_parse(make_daemon: MakeDaemon) -> None:
    d = make_daemon().start()
    assert d.stop() == 0
    pattern = re.compile(
        r'^time="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z" level=(info|warning|debug|error) '
        r'msg=("(?:[^"\\]|\\.)*"|\S+)( [a-z_]+=("(?:[^"\\]|\\.)*"|\S*))*$'
    )
    lines = d.log().splitlines()
    assert lines
    for line in lines:
        assert pattern.match(line), line
    assert re.search(r'msg="containerd successfully booted in \d+\.\d{6}s"', d.log())
    serving = [line for line in lines if "msg=serving..." in line]
    assert serving[-1].endswith(f"address={d.address}")


def fails_with(env: dict[str, str], *args: str) -> str:
    res = subprocess.run(
        containerd_cmd(*args), capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert res.returncode == 1, res.stderr
    return res.stderr.strip()


def test_bad_start_arguments(short_dir: Path, env: dict[str, str]) -> None:
    root, state, sock = str(short_dir / "r"), str(short_dir / "s"), str(short_dir / "s.sock")
    assert (
        fails_with(env, "--root", root, "--state", root, "-a", sock)
        == "containerd: root and state must be different paths"
    )
    assert (
        fails_with(env, "-l", "foo", "--root", root, "--state", state, "-a", sock)
        == 'containerd: not a valid logrus Level: "foo"'
    )
    long_sock = str(short_dir / ("x" * 120) / "c.sock")
    assert "too long (> 107 bytes)" in fails_with(
        env, "--root", root, "--state", state, "-a", long_sock
    )
    missing = fails_with(env, "--config", str(short_dir / "nope.toml"))
    assert missing.startswith("containerd: ")
    assert "nope.toml" in missing
    bad_format = short_dir / "fmt.toml"
    bad_format.write_text('version = 2\n[debug]\nformat = "xml"\n')
    assert "xml" in fails_with(env, "--config", str(bad_format), "--root", root, "--state", state)


def test_version_flag(env: dict[str, str]) -> None:
    from pycontainerd.daemon.version import server_version

    out = subprocess.run(
        containerd_cmd("--version"), capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout == f"containerd pycontainerd {server_version()} 0123456789abcdef\n"


def http_get(address: str, path: str) -> tuple[int, str]:
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(address)
    else:
        host, port = address.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)))
    with sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_debug_and_metrics_endpoints(make_daemon: MakeDaemon) -> None:
    port = free_port()
    d = make_daemon(name="m")
    debug_sock = str(d.base / "debug.sock")
    d.config_path = d.base / "config.toml"
    d.config_path.write_text(
        f'version = 2\n[debug]\naddress = "{debug_sock}"\n[metrics]\naddress = "127.0.0.1:{port}"\n'
    )
    d.start()
    d.ctr("version")
    d.ctr("plugins", "ls", "id=bad", check=False)
    status, body = http_get(debug_sock, "/debug/vars")
    assert status == 200
    data = json.loads(body)
    assert data["cmdline"]
    assert d.proc is not None
    assert data["process"]["pid"] == d.proc.pid
    status, body = http_get(debug_sock, "/debug/pprof/goroutine?debug=2")
    assert status == 200
    assert "thread " in body
    assert http_get(debug_sock, "/nope")[0] == 404
    status, body = http_get(f"127.0.0.1:{port}", "/v1/metrics")
    assert status == 200
    assert re.search(r"^process_resident_memory_bytes \d+", body, re.M)
    assert re.search(r"^process_open_fds \d+", body, re.M)
    assert re.search(r"^process_start_time_seconds \d", body, re.M)
    assert re.search(
        r'^grpc_server_handled_total\{grpc_code="OK",grpc_method="Version",'
        r'grpc_service="containerd.services.version.v1.Version",grpc_type="unary"\} 1$',
        body,
        re.M,
    )
    assert re.search(
        r'^grpc_server_handled_total\{grpc_code="INVALID_ARGUMENT",grpc_method="Plugins"',
        body,
        re.M,
    )
    assert 'grpc_server_handling_seconds_bucket{grpc_method="Version"' in body
    assert d.stop() == 0
    assert not os.path.exists(debug_sock)


def test_metrics_include_plugin_sources(make_daemon: MakeDaemon) -> None:
    # The GC scheduler (metadata) is a MetricsSource: its counters join the page.
    modules = ",".join(
        f"pycontainerd.{name}.plugin"
        for name in ("daemon", "events", "content", "snapshots", "metadata")
    )
    port = free_port()
    d = make_daemon(name="g", env={"PYCONTAINERD_EXTRA_PLUGINS": modules})
    d.config_path = d.base / "config.toml"
    d.config_path.write_text(f'version = 2\n[metrics]\naddress = "127.0.0.1:{port}"\n')
    d.start()  # the first collection runs after the scheduler's startup_delay

    def collected() -> bool:
        body = http_get(f"127.0.0.1:{port}", "/v1/metrics")[1]
        return re.search(r"^pycontainerd_gc_collections_total [1-9]", body, re.M) is not None

    wait_for(collected, what="a collection counted on /v1/metrics")
    status, body = http_get(f"127.0.0.1:{port}", "/v1/metrics")
    assert status == 200
    assert "# TYPE pycontainerd_gc_collections_total counter" in body
    assert re.search(r"^pycontainerd_gc_seconds_total \S+$", body, re.M)
    assert re.search(r"^pycontainerd_gc_interval_seconds \S+$", body, re.M)
    assert re.search(r"^process_open_fds \d+", body, re.M)  # the daemon's own lines stay
    assert d.stop() == 0


def test_streams_ended_by_the_client_log_no_context_errors(make_daemon: MakeDaemon) -> None:
    # Go ctr drops a stream as soon as it has what it needs (a Write after the
    # commit response, a List after the last batch, events on exit); the
    # handlers' namespace and lease must not outlive the call's context
    # ("Token ... was created in a different Context"). How often a stream is
    # dropped right at a ``yield`` depends on timing (about one ingest in ten
    # here): many ingests make it near certain. The deterministic check of the
    # mechanism is in the api package's grpcutil tests.
    require_binary(CTR)
    modules = ",".join(
        f"pycontainerd.{name}.plugin"
        for name in ("daemon", "events", "content", "snapshots", "metadata")
    )
    d = make_daemon(name="s", env={"PYCONTAINERD_EXTRA_PLUGINS": modules}).start()
    for i in range(60):
        subprocess.run(
            [CTR, "-a", d.address, "content", "ingest", f"blob-{i}"],
            input=f"blob {i}".encode() * 50,
            check=True,
            capture_output=True,
            timeout=30,
        )
    for _ in range(5):
        d.ctr("content", "ls", "-q")  # (unleased blobs may already be collected)
        d.ctr("--namespace", "other", "content", "ls")
    for i in range(3):
        d.ctr("snapshots", "--snapshotter", "native", "prepare", f"s{i}", "")
    assert len(d.ctr("snapshots", "--snapshotter", "native", "ls").stdout.splitlines()) == 4
    with subprocess.Popen(
        [CTR, "-a", d.address, "events"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as events:
        try:
            out = events.stdout
            assert out is not None
            n = 0

            def event_arrived() -> bool:
                nonlocal n
                n += 1  # until the subscription is up, events go unseen: publish again
                d.ctr("namespaces", "create", f"probe-{n}")
                return bool(select.select([out], [], [], 0.2)[0])

            wait_for(event_arrived, what="an event on the ctr events stream")
            assert b"/namespaces/create" in out.readline()
        finally:
            events.kill()
    d.ctr("version")  # one more call after the events stream went away
    assert d.stop() == 0
    log = d.log()
    assert "different Context" not in log
    assert "Task exception was never retrieved" not in log


async def test_health_check(make_daemon: MakeDaemon) -> None:
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

    d = make_daemon().start()
    async with grpc.aio.insecure_channel(f"unix:{d.address}") as channel:
        resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
