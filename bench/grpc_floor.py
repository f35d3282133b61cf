"""What a bare gRPC server costs per ``Content.Read`` call, driven by the Go ``ctr``.

    uv run python bench/grpc_floor.py [--mib 64] [--variants aio,aio-write,...]

Serves one in-memory blob through a minimal ``Content`` servicer (``Info`` and
``Read`` only, no store, no namespace) and times ``ctr content get`` of it, which
asks for the blob in 32 KiB ``Read`` calls, one call per chunk. Each variant
changes one thing about the server, so the table shows what the transport
alone allows and what each choice costs:

- ``aio``: ``grpc.aio`` with an async-generator ``Read``;
- ``aio-write``: ``await context.write()`` instead of ``yield``;
- ``aio-raw``: the ``Read`` handler's response serializer is the identity and
  the servicer yields pre-serialized ``ReadContentResponse`` bytes;
- ``aio-unary``: ``Read`` served by a unary-unary handler (what the daemon
  does): leading messages written, the last returned with the status;
- ``aio-intercept``: ``aio`` behind the daemon's ``MetricsInterceptor``;
- ``aio-opts``: ``aio`` with ``grpc.optimization_target=throughput`` and no
  ``so_reuseport``;
- ``sync``: the synchronous ``grpc.server`` with a thread pool;
- ``h2``: ``aio-unary``'s servicer on our own HTTP/2 server
  (:mod:`pycontainerd.api.h2grpc`, what the daemon serves its socket with),
  observed by the daemon's ``GrpcMetrics``;
- ``h2-stream``: ``aio``'s async-generator servicer on the same server.

Prints MiB/s (best run), wall and server CPU per call, and containerd's
throughput for the same blob as the reference. A benchmark, never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _harness import CTR, GC_ROOT, channel, containerd_peer, running, tmpfs_dir, write_blob

if TYPE_CHECKING:
    from collections.abc import Iterator

VARIANTS = (
    "aio",
    "aio-write",
    "aio-raw",
    "aio-unary",
    "aio-intercept",
    "aio-opts",
    "sync",
    "h2",
    "h2-stream",
    "hyper",
    "hyper-stream",
)


def _servicer(blob: bytes, digest: str, mode: str, chunk: int = 1 << 20) -> Any:
    import grpc
    from google.protobuf import timestamp_pb2

    from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc

    ts = timestamp_pb2.Timestamp(seconds=int(time.time()))
    info = content_pb2.Info(digest=digest, size=len(blob), created_at=ts, updated_at=ts)

    def ranges(req: Any) -> Any:
        off = max(req.offset, 0)
        size = req.size if req.size > 0 else len(blob) - off
        end = min(len(blob), off + size)
        while off < end:
            n = min(chunk, end - off)
            yield off, blob[off : off + n]
            off += n

    class Servicer(content_pb2_grpc.ContentServicer):
        async def Info(self, request: Any, context: Any) -> Any:  # noqa: N802
            return content_pb2.InfoResponse(info=info)

        if mode == "aio-write":

            async def Read(self, request: Any, context: Any) -> None:  # noqa: N802
                for off, data in ranges(request):
                    await context.write(content_pb2.ReadContentResponse(offset=off, data=data))

        elif mode in ("aio-unary", "h2", "hyper"):

            async def Read(self, request: Any, context: Any) -> Any:  # noqa: N802
                last = None
                for off, data in ranges(request):
                    if last is not None:
                        await context.write(last.SerializeToString())
                    last = content_pb2.ReadContentResponse(offset=off, data=data)
                if last is None:
                    await context.abort(grpc.StatusCode.OK)
                return last

        elif mode == "aio-raw":

            async def Read(self, request: Any, context: Any) -> Any:  # noqa: N802
                for off, data in ranges(request):
                    yield content_pb2.ReadContentResponse(offset=off, data=data).SerializeToString()

        else:

            async def Read(self, request: Any, context: Any) -> Any:  # noqa: N802
                for off, data in ranges(request):
                    yield content_pb2.ReadContentResponse(offset=off, data=data)

    class SyncServicer(content_pb2_grpc.ContentServicer):
        def Info(self, request: Any, context: Any) -> Any:  # noqa: N802
            return content_pb2.InfoResponse(info=info)

        def Read(self, request: Any, context: Any) -> Any:  # noqa: N802
            for off, data in ranges(request):
                yield content_pb2.ReadContentResponse(offset=off, data=data)

    return SyncServicer() if mode == "sync" else Servicer()


def _register(server: Any, servicer: Any, mode: str) -> None:
    import grpc

    from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc

    if mode not in ("aio-raw", "aio-unary", "h2", "hyper"):
        content_pb2_grpc.add_ContentServicer_to_server(servicer, server)
        return
    factory = (
        grpc.unary_unary_rpc_method_handler
        if mode in ("aio-unary", "h2", "hyper")
        else grpc.unary_stream_rpc_method_handler
    )
    handlers = {
        "Info": grpc.unary_unary_rpc_method_handler(
            servicer.Info,
            request_deserializer=content_pb2.InfoRequest.FromString,
            response_serializer=content_pb2.InfoResponse.SerializeToString,
        ),
        "Read": factory(
            servicer.Read,
            request_deserializer=content_pb2.ReadContentRequest.FromString,
            response_serializer=None if mode == "aio-raw" else _serialize,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("containerd.services.content.v1.Content", handlers),)
    )


def _serialize(message: Any) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()  # type: ignore[no-any-return]


def _hyper_server(methods: Any, generic: Any) -> Any:
    """A prototype gRPC server on python-hyper's ``h2`` state machine (the ``hyper`` variants).

    The same dispatch as h2grpc (registered handlers, unary results and
    writes, async generators), with h2 doing the framing, HPACK, stream
    states and flow control: what moving the daemon to ``h2`` would cost.
    """
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    from pycontainerd.api.h2grpc import _CallDetails

    config = h2.config.H2Configuration(client_side=False, header_encoding=None)

    class Call:
        def __init__(self, conn: Any, sid: int, path: str) -> None:
            self.conn = conn
            self.sid = sid
            self.path = path
            self.buf = bytearray()
            self.headers_sent = False
            self.waiter: asyncio.Future[None] | None = None

        async def write(self, message: Any) -> None:
            data = message if isinstance(message, bytes) else message.SerializeToString()
            await self.conn.send(self, b"\x00" + len(data).to_bytes(4, "big") + data)

    class Conn(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.h2 = h2.connection.H2Connection(config)
            self.h2.local_settings = h2.settings.Settings(
                client=False,
                initial_values={
                    h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 << 20,
                    h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20,
                },
            )
            self.h2.initiate_connection()
            self.h2.increment_flow_control_window((32 << 20) - 65535)
            self.calls: dict[int, Call] = {}
            self.loop = asyncio.get_running_loop()
            self.flush()

        def flush(self) -> None:
            data = self.h2.data_to_send()
            if data:
                self.transport.write(data)

        def data_received(self, data: bytes) -> None:
            for ev in self.h2.receive_data(data):
                if isinstance(ev, h2.events.RequestReceived):
                    path = next(v for k, v in ev.headers if k == b":path").decode()
                    self.calls[ev.stream_id] = Call(self, ev.stream_id, path)
                elif isinstance(ev, h2.events.DataReceived):
                    call = self.calls.get(ev.stream_id)
                    if call is not None:
                        call.buf += ev.data
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    call = self.calls.get(ev.stream_id)
                    if call is not None:
                        self.loop.create_task(self.run(call))
                elif isinstance(ev, h2.events.WindowUpdated):
                    for call in self.calls.values():
                        if call.waiter is not None and not call.waiter.done():
                            call.waiter.set_result(None)
                elif isinstance(ev, h2.events.StreamReset):
                    self.calls.pop(ev.stream_id, None)
            self.flush()

        def headers(self, call: Call) -> None:
            if not call.headers_sent:
                call.headers_sent = True
                self.h2.send_headers(
                    call.sid, [(b":status", b"200"), (b"content-type", b"application/grpc")]
                )

        async def send(self, call: Call, payload: bytes) -> None:
            self.headers(call)
            view = memoryview(payload)
            while view:
                room = min(self.h2.local_flow_control_window(call.sid), len(view))
                if room <= 0:
                    call.waiter = self.loop.create_future()
                    self.flush()
                    await call.waiter
                    continue
                limit = self.h2.max_outbound_frame_size
                for off in range(0, room, limit):
                    self.h2.send_data(call.sid, bytes(view[off : min(off + limit, room)]))
                view = view[room:]
            self.flush()

        async def run(self, call: Call) -> None:
            handler = methods.get(call.path)
            if handler is None:
                details = _CallDetails(call.path, ())
                for g in generic:
                    handler = g.service(details)
                    if handler is not None:
                        break
            request = handler.request_deserializer(bytes(call.buf[5:]))
            if handler.response_streaming:
                async for item in handler.unary_stream(request, call):
                    await call.write(item)
            else:
                last = await handler.unary_unary(request, call)
                await call.write(last)
            self.headers(call)
            self.h2.send_headers(call.sid, [(b"grpc-status", b"0")], end_stream=True)
            self.calls.pop(call.sid, None)
            self.flush()

    return Conn


def serve(address: str, blob_path: str, mode: str, chunk: int = 1 << 20) -> None:
    """The server process: serve ``blob_path`` on ``address`` until killed."""
    import grpc
    import grpc.aio

    blob = Path(blob_path).read_bytes()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    servicer = _servicer(blob, digest, mode, chunk)
    opts: list[tuple[str, Any]] = [("grpc.max_send_message_length", 16 << 20)]
    if mode == "sync":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=opts)
        _register(server, servicer, mode)
        server.add_insecure_port(f"unix:{address}")
        server.start()
        server.wait_for_termination()
        return

    async def main_h2() -> None:
        from pycontainerd.api import h2grpc
        from pycontainerd.daemon.metrics import GrpcMetrics

        server = h2grpc.Server(observer=GrpcMetrics())
        _register(server, servicer, mode)
        await server.listen_unix(address)
        await asyncio.Event().wait()

    async def main_hyper() -> None:
        from pycontainerd.api import h2grpc

        registry = h2grpc.Server()  # only its registration tables
        _register(registry, servicer, mode)
        conn = _hyper_server(registry.methods, registry.generic)
        server = await asyncio.get_running_loop().create_unix_server(conn, address)
        async with server:
            await asyncio.Event().wait()

    if mode.startswith("h2"):
        asyncio.run(main_h2())
        return
    if mode.startswith("hyper"):
        asyncio.run(main_hyper())
        return

    async def main() -> None:
        interceptors: list[Any] = []
        o = [*opts, ("grpc.so_reuseport", 0)]
        if mode == "aio-intercept":
            from pycontainerd.daemon.metrics import GrpcMetrics
            from pycontainerd.daemon.server import MetricsInterceptor

            interceptors.append(MetricsInterceptor(GrpcMetrics()))
        if mode == "aio-opts":
            o = [*opts, ("grpc.optimization_target", "throughput")]
        server = grpc.aio.server(interceptors=interceptors, options=o)
        _register(server, servicer, mode)
        server.add_insecure_port(f"unix:{address}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(main())


def ctr_get(address: str, digest: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [CTR, "-a", address, "content", "get", digest],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    return time.perf_counter() - t0


def wait_socket(address: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if os.path.exists(address):
            res = subprocess.run([CTR, "-a", address, "version"], capture_output=True, check=False)
            if b"Client" in res.stdout:
                time.sleep(0.05)
                return
        time.sleep(0.02)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _grpc_calls(address: str, digest: str, what: str, count: int) -> int:
    """Drive ``count`` Info calls (``unary``) or one streamed Read (``stream``); messages seen."""
    import grpc

    from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc

    with grpc.insecure_channel(f"unix:{address}") as ch:
        stub = content_pb2_grpc.ContentStub(ch)
        if what == "unary":
            req = content_pb2.InfoRequest(digest=digest)
            for _ in range(count):
                stub.Info(req)
            return count
        return sum(1 for _ in stub.Read(content_pb2.ReadContentRequest(digest=digest)))


@contextlib.contextmanager
def serving(blob: Path, mode: str, chunk: int = 1 << 20) -> Iterator[tuple[str, int]]:
    """A :func:`serve` process for ``blob`` in ``mode``: its address and pid, once it listens."""
    base = tmpfs_dir()
    address = str(base / "s.sock")
    proc = multiprocessing.get_context("spawn").Process(
        target=serve, args=(address, str(blob), mode, chunk), daemon=True
    )
    proc.start()
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(address) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert proc.pid is not None
        yield address, proc.pid
    finally:
        proc.terminate()
        proc.join(5)
        with contextlib.suppress(OSError):
            os.unlink(address)
        base.rmdir()


def measure_calls(mode: str, blob: Path, digest: str, what: str, runs: int) -> float:
    """Server CPU seconds per unary ``Info`` call or per streamed 16 KiB message (least of runs)."""
    chunk = 16 << 10 if what == "stream" else 1 << 20
    with serving(blob, mode, chunk) as (address, pid):
        _grpc_calls(address, digest, what, 200)  # warm-up
        best = float("inf")
        for _ in range(runs):
            c0 = _cpu(pid)
            n = _grpc_calls(address, digest, what, 3000)
            best = min(best, (_cpu(pid) - c0) / n)
        return best


def measure_variant(mode: str, blob: Path, digest: str, runs: int) -> tuple[float, float]:
    """(best MiB/s, server CPU seconds per get)."""
    with serving(blob, mode) as (address, pid):
        mib = blob.stat().st_size / (1 << 20)
        ctr_get(address, digest)  # warm-up
        c0 = _cpu(pid)
        best = max(mib / ctr_get(address, digest) for _ in range(runs))
        return best, (_cpu(pid) - c0) / runs


def containerd_rate(blob: Path, runs: int) -> float:
    peer = containerd_peer()
    mib = blob.stat().st_size / (1 << 20)
    with running(peer):
        with channel(peer) as ch:
            digest = write_blob(ch, blob, ref="floor", labels=GC_ROOT)
        ctr_get(peer.address, digest)
        return max(mib / ctr_get(peer.address, digest) for _ in range(runs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--no-containerd", action="store_true")
    parser.add_argument(
        "--calls",
        action="store_true",
        help="also measure server CPU per unary Info call and per streamed 16 KiB message",
    )
    args = parser.parse_args()
    base = tmpfs_dir()
    blob = base / "blob"
    try:
        blob.write_bytes(os.urandom(args.mib << 20))
        digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
        calls = (args.mib << 20) // (32 << 10)
        if not args.no_containerd:
            rate = containerd_rate(blob, args.runs)
            us = args.mib / rate / calls * 1e6
            print(f"{'containerd':<16}{rate:8.1f} MiB/s  {us:6.0f} us/call", flush=True)
        for mode in args.variants.split(","):
            rate, cpu = measure_variant(mode, blob, digest, args.runs)
            us = args.mib / rate / calls * 1e6
            cpu_us = cpu / calls * 1e6
            line = f"{mode:<16}{rate:8.1f} MiB/s  {us:6.0f} us/call  {cpu_us:6.0f} us CPU/call"
            if args.calls and (mode.startswith(("h2", "hyper"))):
                unary = measure_calls(mode, blob, digest, "unary", args.runs) * 1e6
                stream = measure_calls(mode, blob, digest, "stream", args.runs) * 1e6
                line += f"  {unary:6.0f} us/unary  {stream:6.1f} us/streamed msg"
            print(line, flush=True)
    finally:
        blob.unlink(missing_ok=True)
        base.rmdir()
    return 0


if __name__ == "__main__":
    sys.exit(main())
