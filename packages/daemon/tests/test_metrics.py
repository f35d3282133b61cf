"""The ``/v1/metrics`` page assembled in process (the served page is tested in test_daemon)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pycontainerd.daemon import metrics as metrics_mod

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import pytest


def test_metrics_page_survives_a_failing_source(caplog: pytest.LogCaptureFixture) -> None:
    class Good:
        def metrics_lines(self) -> list[str]:
            return ["pycontainerd_good_total 3"]

    class Broken:
        def metrics_lines(self) -> list[str]:
            raise RuntimeError("boom")

    page = metrics_mod.render(None, [Broken(), Good()]).decode()
    assert page.endswith("pycontainerd_good_total 3\n")
    assert "process_open_fds" in page
    assert "metrics source failed" in caplog.text


async def test_interceptor_counts_each_call_and_reuses_the_wrapped_handler() -> None:
    import shutil
    import tempfile

    import grpc
    import grpc.aio

    from pycontainerd.daemon.server import RPC_TYPE_ATTR, MetricsInterceptor

    async def echo(request: bytes, _context: object) -> bytes:
        return request

    async def chunks(request: bytes, _context: object) -> AsyncIterator[bytes]:
        for b in request:
            yield bytes([b])

    async def stream_as_unary(request: bytes, _context: object) -> bytes:
        return request

    setattr(stream_as_unary, RPC_TYPE_ATTR, "server_stream")
    handlers: dict[str, grpc.RpcMethodHandler[bytes, bytes]] = {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Chunks": grpc.unary_stream_rpc_method_handler(chunks),
        "Read": grpc.unary_unary_rpc_method_handler(stream_as_unary),
    }
    recorder = metrics_mod.GrpcMetrics()
    interceptor = MetricsInterceptor(recorder)
    server = grpc.aio.server(interceptors=[interceptor])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.S", handlers),))
    sockdir = tempfile.mkdtemp(dir="/tmp", prefix="mi-")
    try:
        server.add_insecure_port(f"unix://{sockdir}/s.sock")
        await server.start()
        async with grpc.aio.insecure_channel(f"unix://{sockdir}/s.sock") as ch:
            call_echo: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary("/t.S/Echo")
            call_chunks: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = ch.unary_stream(
                "/t.S/Chunks"
            )
            call_read: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = ch.unary_unary("/t.S/Read")
            for _ in range(3):
                assert await call_echo(b"hi") == b"hi"
                assert [m async for m in call_chunks(b"ab")] == [b"a", b"b"]
                assert await call_read(b"x") == b"x"
        await server.stop(None)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    lines = recorder.render()
    for method, kind in (("Echo", "unary"), ("Chunks", "server_stream"), ("Read", "server_stream")):
        labels = f'grpc_method="{method}",grpc_service="t.S",grpc_type="{kind}"'
        assert f"grpc_server_started_total{{{labels}}} 3" in lines
        assert f'grpc_server_handled_total{{grpc_code="OK",{labels}}} 3' in lines
        assert f"grpc_server_handling_seconds_count{{{labels}}} 3" in lines
    assert len(interceptor._wrapped) == 3, "one wrapped handler per method"
