"""Exec, Attach and PortForward through the CRI, end to end.

A daemon with the CRI plugin runs busybox containers in a pod (real runc,
overlayfs and the CNI bridge); the URLs the CRI calls return are opened with
the test SPDY/3.1 and WebSocket clients, as kubelet and critest open them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.cri.streaming import remotecommand as rc
from pycontainerd.cri.streaming import testing as st

if TYPE_CHECKING:
    from collections.abc import Callable

    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]

IMAGE = "localhost/pycontainerd-test/stream:1"
APPLETS = ("sh", "sleep", "cat", "stty", "echo", "httpd", "mkdir", "nc", "true")


def _import_image(cri: Cri) -> None:
    cri.import_image(IMAGE, APPLETS)


def _start(
    cri: Cri,
    sid: str,
    pod: pb.PodSandboxConfig,
    name: str,
    *command: str,
    stdin: bool = False,
    stdin_once: bool = False,
    tty: bool = False,
) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=IMAGE),
        command=list(command),
        log_path=f"{name}.log",
        stdin=stdin,
        stdin_once=stdin_once,
        tty=tty,
    )
    return cri.start_container(sid, pod, config)


@pytest.fixture
def pod(cri: Cri) -> tuple[Cri, str, str]:
    """A pod with one long-running shell container: (cri, sandbox id, container id)."""
    _import_image(cri)
    config = cri.pod_config("stream")
    config.log_directory = str(cri.base / "logs")
    sid = cri.run(config)
    cid = _start(cri, sid, config, "shell", "sleep", "100000")
    return cri, sid, cid


def _exec_url(cri: Cri, cid: str, *cmd: str, **kw: bool) -> str:
    opts = {"stdout": True, "stderr": True, **kw}
    resp = cri.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=list(cmd), **opts))
    return str(resp.url)


@pytest.mark.parametrize("transport", ["spdy-v4", "websocket-v5"])
def test_exec_gives_both_streams_and_the_exit_code(
    pod: tuple[Cri, str, str], transport: str
) -> None:
    cri, _, cid = pod
    url = _exec_url(cri, cid, "sh", "-c", "echo out; echo err >&2; exit 7")
    assert url.startswith("http://127.0.0.1:")
    if transport == "spdy-v4":
        result = asyncio.run(st.spdy_exec(url))
    else:
        result = asyncio.run(st.ws_exec(url))
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    assert result.exit_code == 7
    status = st.status_of(result)
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"


def test_exec_success_and_older_protocols(pod: tuple[Cri, str, str]) -> None:
    cri, _, cid = pod
    ok = asyncio.run(st.spdy_exec(_exec_url(cri, cid, "echo", "hi")))
    assert (ok.stdout, ok.exit_code, st.status_of(ok)["status"]) == (b"hi\n", 0, "Success")
    old = asyncio.run(
        st.spdy_exec(_exec_url(cri, cid, "sh", "-c", "exit 3"), protocols=(rc.SPDY_V2,))
    )
    assert old.error == b"command terminated with non-zero exit code: 3"


@pytest.mark.parametrize("transport", ["spdy-v4", "websocket-v5"])
def test_exec_stdin_round_trip(pod: tuple[Cri, str, str], transport: str) -> None:
    cri, _, cid = pod
    data = b"".join(b"line %d\n" % i for i in range(5000))
    url = _exec_url(cri, cid, "cat", stdin=True)
    if transport == "spdy-v4":
        result = asyncio.run(st.spdy_exec(url, stdin=data))
    else:
        result = asyncio.run(st.ws_exec(url, stdin=data))
    assert result.stdout == data
    assert result.exit_code == 0


def test_exec_with_a_tty_sees_the_resize(pod: tuple[Cri, str, str]) -> None:
    cri, _, cid = pod
    # The shell reports its terminal's size when SIGWINCH says it changed.
    script = 'trap "stty size; exit 0" WINCH; echo ready; while :; do sleep 0.1; done'
    url = _exec_url(cri, cid, "sh", "-c", script, tty=True, stderr=False)

    async def run() -> bytes:
        c = await st.SpdyClient.connect(url)
        try:
            err = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_ERROR})
            out = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_STDOUT})
            resize = await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_RESIZE})
            async with asyncio.timeout(30):
                await c.wait_for(lambda: b"ready" in c.streams[out].data)
                await c.send(resize, rc.encode_resize(rc.TerminalSize(width=77, height=33)))
                assert (
                    st.status_of(st.CommandResult(b"", b"", await c.read_all(err), ""))["status"]
                    == "Success"
                )
                return await c.read_all(out)
        finally:
            await c.close()

    output = asyncio.run(run())
    assert b"33 77" in output
    assert b"\r\n" in output  # a terminal: LF became CRLF


def test_client_disconnecting_mid_exec_leaves_no_process(pod: tuple[Cri, str, str]) -> None:
    cri, _, cid = pod
    marker = str(900000 + os.getpid() % 90000)
    url = _exec_url(cri, cid, "sleep", marker, stderr=False)

    async def start_and_leave() -> None:
        c = await st.SpdyClient.connect(url)
        await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_ERROR})
        await c.create_stream({rc.STREAM_TYPE_HEADER: rc.STREAM_STDOUT})
        await asyncio.to_thread(_until, lambda: bool(_pids_of(marker)), "the exec started")
        await c.close()

    asyncio.run(start_and_leave())
    _until(lambda: not _pids_of(marker), "the exec process is gone")
    # Its FIFOs are gone too, and the container still serves execs.
    io_dir = cri.daemon.state / "io.containerd.grpc.v1.cri" / "io" / cid
    _until(lambda: not list(io_dir.glob("exec-*")), "its FIFOs are removed")
    again = asyncio.run(st.spdy_exec(_exec_url(cri, cid, "true")))
    assert again.exit_code == 0


def test_reused_or_unknown_token_is_404(pod: tuple[Cri, str, str]) -> None:
    cri, _, cid = pod
    url = _exec_url(cri, cid, "true")
    assert asyncio.run(st.spdy_exec(url)).exit_code == 0
    with pytest.raises(ConnectionRefusedError, match="404"):
        asyncio.run(st.spdy_exec(url))
    with pytest.raises(ConnectionRefusedError, match="404"):
        asyncio.run(st.ws_exec(url.rsplit("/", 1)[0] + "/notatoken"))


def test_exec_requests_are_checked(pod: tuple[Cri, str, str]) -> None:
    cri, _, cid = pod
    with pytest.raises(grpc.RpcError) as e:
        cri.runtime.Exec(pb.ExecRequest(container_id="nosuch", cmd=["true"], stdout=True))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        cri.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=["true"]))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "one of stdin, stdout, or stderr must be set" in str(e.value.details())
    with pytest.raises(grpc.RpcError) as e:
        cri.runtime.Exec(
            pb.ExecRequest(container_id=cid, cmd=["true"], stdout=True, stderr=True, tty=True)
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        cri.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id="nosuch", port=[80]))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    cri.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    with pytest.raises(grpc.RpcError) as e:
        cri.runtime.Exec(pb.ExecRequest(container_id=cid, cmd=["true"], stdout=True))
    assert "container is in CONTAINER_EXITED state" in str(e.value.details())
    with pytest.raises(grpc.RpcError) as e:
        cri.runtime.Attach(pb.AttachRequest(container_id=cid, stdout=True))
    assert "container is in CONTAINER_EXITED state" in str(e.value.details())


# -- attach -----------------------------------------------------------------------------


def test_attach_with_stdin_once(cri: Cri) -> None:
    _import_image(cri)
    config = cri.pod_config("attach")
    config.log_directory = str(cri.base / "logs")
    (cri.base / "logs").mkdir()
    sid = cri.run(config)
    cid = _start(cri, sid, config, "cat", "cat", stdin=True, stdin_once=True)
    url = str(
        cri.runtime.Attach(
            pb.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)
        ).url
    )
    # The end of the attached stdin closes the container's: cat exits, the session ends.
    result = asyncio.run(st.spdy_exec(url, stdin=b"ping\n"))
    assert result.stdout == b"ping\n"
    assert st.status_of(result)["status"] == "Success"
    status = cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    deadline = time.monotonic() + 20
    while status.state != pb.CONTAINER_EXITED and time.monotonic() < deadline:
        time.sleep(0.05)
        status = cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 0)
    # What the container wrote is in its log as well.
    assert "stdout F ping" in (Path(config.log_directory) / "cat.log").read_text()


def test_attach_to_a_tty_container_over_websocket(cri: Cri) -> None:
    _import_image(cri)
    config = cri.pod_config("attachtty")
    sid = cri.run(config)
    cid = _start(cri, sid, config, "tty", "sh", stdin=True, tty=True)
    request = pb.AttachRequest(container_id=cid, stdin=True, stdout=True, tty=True)
    url = str(cri.runtime.Attach(request).url)

    async def run() -> bytes:
        c = await st.WsClient.connect(url, (rc.WS_V5,))
        try:
            await c.send(rc.RESIZE, rc.encode_resize(rc.TerminalSize(width=91, height=19)))
            # Until the resize has reached the terminal, ask again.
            async with asyncio.timeout(30):
                while b"19 91" not in c.channel(rc.STDOUT):
                    await c.send(rc.STDIN, b"stty size\n")
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await c.wait_for(lambda: b"19 91" in c.channel(rc.STDOUT))
                # The shell exits: the session ends with the container.
                await c.send(rc.STDIN, b"exit 0\n")
                await c.closed.wait()
            return c.channel(rc.STDOUT)
        finally:
            await c.close()

    assert b"19 91" in asyncio.run(run())


# -- port-forward -----------------------------------------------------------------------


def _web_pod(cri: Cri) -> tuple[str, str]:
    _import_image(cri)
    config = cri.pod_config("web")
    sid = cri.run(config)
    cid = _start(
        cri, sid, config, "server",
        "sh", "-c", "mkdir -p /tmp/www && echo hello > /tmp/www/index.html && "
        "exec httpd -f -p 8080 -h /tmp/www",
    )  # fmt: skip
    # Until the server listens (inside the pod: nothing is published on the host).
    deadline = time.monotonic() + 20
    probe = ["sh", "-c", "echo 'GET / HTTP/1.0' | nc 127.0.0.1 8080 -w 1 >/dev/null"]
    while True:
        resp = cri.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=probe, timeout=5))
        if resp.exit_code == 0 or time.monotonic() > deadline:
            break
    return sid, cid


def test_port_forward_over_spdy(cri: Cri) -> None:
    sid, _ = _web_pod(cri)
    url = str(
        cri.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=sid, port=[8080, 1])).url
    )

    async def run() -> tuple[list[bytes], bytes, bytes]:
        c = await st.SpdyClient.connect(url, ("portforward.k8s.io",))
        try:
            pairs = []
            for rid in range(4):  # concurrent connections on one session
                e = await c.create_stream(
                    {"streamtype": "error", "port": "8080", "requestid": str(rid)}
                )
                d = await c.create_stream(
                    {"streamtype": "data", "port": "8080", "requestid": str(rid)}
                )
                pairs.append((e, d))
            for _, d in pairs:
                await c.send(d, b"GET /index.html HTTP/1.0\r\n\r\n", fin=True)
            async with asyncio.timeout(30):
                pages = [await c.read_all(d) for _, d in pairs]
                errors = [await c.read_all(e) for e, _ in pairs]
                assert errors == [b""] * 4
                # A port nothing listens on: an error on its error stream, not a hang.
                e = await c.create_stream({"streamtype": "error", "port": "1", "requestid": "9"})
                d = await c.create_stream({"streamtype": "data", "port": "1", "requestid": "9"})
                refused = await c.read_all(e)
                refused_data = await c.read_all(d)
            return pages, refused, refused_data
        finally:
            await c.close()

    pages, refused, refused_data = asyncio.run(run())
    for page in pages:
        assert page.startswith(b"HTTP/1.")
        assert page.endswith(b"\r\n\r\nhello\n")
    assert b"error forwarding port 1" in refused
    assert b"connection refused" in refused.lower()
    assert refused_data == b""


def test_port_forward_over_websocket(cri: Cri) -> None:
    sid, _ = _web_pod(cri)
    url = str(cri.runtime.PortForward(pb.PortForwardRequest(pod_sandbox_id=sid, port=[8080])).url)

    async def run() -> bytes:
        c = await st.WsClient.connect(url + "?port=8080", ("portforward.k8s.io",))
        try:
            await c.send(0, b"GET /index.html HTTP/1.0\r\n\r\n")
            async with asyncio.timeout(30):
                await c.wait_for(lambda: c.channel(0).endswith(b"hello\n"))
            return c.channel(0)
        finally:
            await c.close()

    data = asyncio.run(run())
    assert data.startswith(struct.pack("<H", 8080) + b"HTTP/1.")


# -- helpers ----------------------------------------------------------------------------


def _pids_of(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes() == b"sleep\0" + marker.encode() + b"\0":
                    found.append(int(entry.name))
    return found


def _until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    """Poll ``predicate`` (process tables and directories have no events to await)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not in {timeout} s: {what}"
        time.sleep(0.05)


def test_concurrent_exec_sessions(pod: tuple[Cri, str, str]) -> None:
    cri, _, cid = pod
    urls = [_exec_url(cri, cid, "sh", "-c", f"echo {i}; exit {i % 5}") for i in range(20)]

    async def run() -> list[st.CommandResult]:
        async with asyncio.timeout(60):
            return list(
                await asyncio.gather(
                    *(st.spdy_exec(u) if i % 2 else st.ws_exec(u) for i, u in enumerate(urls))
                )
            )

    results = asyncio.run(run())
    for i, result in enumerate(results):
        assert (result.stdout, result.exit_code) == (f"{i}\n".encode(), i % 5)
