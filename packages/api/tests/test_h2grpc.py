"""h2grpc, the daemon's HTTP/2 gRPC server, against grpcio's client, raw sockets and the Go ctr.

Every test serves a small bytes-in/bytes-out test service (plus a protobuf-typed
method) on a unix socket in its own short directory and talks to it through
grpcio's asyncio client, as our client does, or through a raw socket for the
protocol errors a well-behaved client never makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import struct
import tempfile
import time
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

import grpc
import grpc.aio
import pytest
from google.protobuf import empty_pb2, timestamp_pb2, wrappers_pb2
from hpack import Decoder, Encoder

from pycontainerd.api import h2grpc
from pycontainerd.api.grpcutil import last_message_with_status
from pycontainerd.api.services.introspection.v1 import introspection_pb2, introspection_pb2_grpc
from pycontainerd.api.services.namespaces.v1 import namespace_pb2, namespace_pb2_grpc
from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc
from pycontainerd.core.testing import wait_for_async

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

SERVICE = "pycontainerd.test.v1.Echo"
GENERIC = "pycontainerd.test.v1.Generic"
"""A service registered only through a generic handler (no registered methods)."""

MIB = 1 << 20
CHANNEL_OPTIONS = (
    ("grpc.max_receive_message_length", 64 * MIB),
    ("grpc.max_send_message_length", 64 * MIB),
)
WAIT = 10.0
"""Upper bound for awaiting a condition that should hold at once."""

Context = Any  # h2grpc.ServicerContext at run time; grpc's stubs type it grpc.ServicerContext
T = TypeVar("T")
Req = TypeVar("Req")
Resp = TypeVar("Resp")


def pattern(n: int) -> bytes:
    """``n`` bytes that differ from position to position, so reordering or loss shows."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


class Recorder:
    """The test service: handlers record what they saw; events order the tests."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.cancelled_flag: bool | None = None
        self.metadata: tuple[tuple[str, str | bytes], ...] = ()
        self.time_remaining: float | None = None
        self.produced = 0
        self.tasks: list[asyncio.Task[Any]] = []
        self.done_codes: list[grpc.StatusCode | None] = []

    def _enter(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        self.started.set()

    async def _hold(self, context: Context) -> None:
        """Wait for the gate; record a cancellation and ``context.cancelled()``."""
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled_flag = context.cancelled()
            self.cancelled.set()
            raise

    # -- unary ---------------------------------------------------------------

    async def echo(self, request: bytes, context: Context) -> bytes:
        return request

    async def digest(self, request: wrappers_pb2.BytesValue, context: Context) -> bytes:
        return hashlib.sha256(request.value).digest()

    async def meta(self, request: bytes, context: Context) -> bytes:
        self.metadata = context.invocation_metadata()
        self.time_remaining = context.time_remaining()
        context.add_done_callback(lambda ctx: self.done_codes.append(ctx.code()))
        await context.send_initial_metadata((("x-initial", "first"),))
        context.set_trailing_metadata((("x-trailer", "t-value"), ("x-trailer-bin", b"\x00\xff")))
        return b"ok"

    async def abort(self, request: bytes, context: Context) -> bytes:
        name, _, details = request.decode().partition("|")
        await context.abort(grpc.StatusCode[name], details, (("x-why", "because"),))
        return b"unreachable"

    async def set_code(self, request: bytes, context: Context) -> bytes:
        context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
        context.set_details("not now: failed precondition")
        return b"ignored"

    async def fail(self, request: bytes, context: Context) -> bytes:
        msg = "boom 100%"
        raise RuntimeError(msg)

    async def slow(self, request: bytes, context: Context) -> bytes:
        self._enter()
        await self._hold(context)
        return b"late"

    async def big_trailers(self, request: bytes, context: Context) -> bytes:
        size = int(request)
        await context.send_initial_metadata((("x-big-initial", "i" * size),))
        context.set_trailing_metadata((("x-big-trailer", "t" * size),))
        return b"ok"

    async def big(self, request: bytes, context: Context) -> bytes:
        return pattern(int(request))

    async def typed(
        self, request: timestamp_pb2.Timestamp, context: Context
    ) -> timestamp_pb2.Timestamp:
        return timestamp_pb2.Timestamp(seconds=request.seconds + 1)

    # -- server streams --------------------------------------------------------

    async def count(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield b"%d" % i

    async def big_stream(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"small"
        yield pattern(int(request))

    async def writes(self, request: bytes, context: Context) -> None:
        for i in range(int(request)):
            await context.write(b"w%d" % i)

    async def encoded(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        """Sends ``request`` messages (sizes 0, 1, ... wrapping at 40 000) in one run."""
        n = int(request)
        await context.write_encoded([pattern(i * 997 % 40_000) for i in range(n)])
        if n < 0:  # never: this only makes the method an async generator that yields nothing
            yield b""

    @last_message_with_status
    async def count_last_with_status(
        self, request: bytes, context: Context
    ) -> AsyncIterator[bytes]:
        """``Count``, its last message marked to travel with the status."""
        for i in range(int(request)):
            yield b"w%d" % i

    @last_message_with_status
    async def count_last_then_fail(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"0"
        yield b"1"
        msg = "stream broke"
        raise ValueError(msg)

    async def count_then_abort(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"0"
        yield b"1"
        await context.abort(grpc.StatusCode.DATA_LOSS, "lost the rest")

    async def count_then_fail(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"0"
        msg = "stream broke"
        raise ValueError(msg)

    async def flood(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        self._enter()
        for i in range(int(request)):
            self.produced += 1
            yield bytes((i % 256,)) * MIB

    async def first_then_hang(self, request: bytes, context: Context) -> AsyncIterator[bytes]:
        yield b"first"
        self._enter()
        await self._hold(context)

    # -- client streams and bidi -------------------------------------------------

    async def total(self, requests: AsyncIterator[bytes], context: Context) -> bytes:
        count = size = 0
        async for message in requests:
            count += 1
            size += len(message)
        return b"%d:%d" % (count, size)

    async def typed_total(
        self, requests: AsyncIterator[timestamp_pb2.Timestamp], context: Context
    ) -> bytes:
        return b"%d" % sum([r.seconds async for r in requests])

    async def read_total(self, requests: AsyncIterator[bytes], context: Context) -> bytes:
        count = size = 0
        while (message := await context.read()) is not grpc.aio.EOF:
            count += 1
            size += len(message)
        return b"%d:%d" % (count, size)

    async def hold_stream(self, requests: AsyncIterator[bytes], context: Context) -> bytes:
        self._enter()
        try:
            async for _ in requests:
                pass
        except asyncio.CancelledError:
            self.cancelled_flag = context.cancelled()
            self.cancelled.set()
            raise
        return b"complete"

    async def chat(self, requests: AsyncIterator[bytes], context: Context) -> AsyncIterator[bytes]:
        async for message in requests:
            yield message.upper()

    def register(self, server: h2grpc.Server) -> None:
        """Register as generated ``add_*Servicer_to_server`` code does."""
        uu = grpc.unary_unary_rpc_method_handler
        us = grpc.unary_stream_rpc_method_handler
        su = grpc.stream_unary_rpc_method_handler
        ss = grpc.stream_stream_rpc_method_handler
        ts = timestamp_pb2.Timestamp
        handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
            "Echo": uu(self.echo),
            "Digest": uu(self.digest, request_deserializer=wrappers_pb2.BytesValue.FromString),
            "Meta": uu(self.meta),
            "Abort": uu(self.abort),
            "SetCode": uu(self.set_code),
            "Fail": uu(self.fail),
            "Slow": uu(self.slow),
            "Big": uu(self.big),
            "BigTrailers": uu(self.big_trailers),
            "Typed": uu(
                self.typed,
                request_deserializer=ts.FromString,
                response_serializer=ts.SerializeToString,
            ),
            "Count": us(self.count),
            "BigStream": us(self.big_stream),
            "Writes": us(self.writes),
            "CountLastWithStatus": us(self.count_last_with_status),
            "CountLastThenFail": us(self.count_last_then_fail),
            "Encoded": us(self.encoded),
            "CountThenAbort": us(self.count_then_abort),
            "CountThenFail": us(self.count_then_fail),
            "Flood": us(self.flood),
            "FirstThenHang": us(self.first_then_hang),
            "Total": su(self.total),
            "ReadTotal": su(self.read_total),
            "TypedTotal": su(self.typed_total, request_deserializer=ts.FromString),
            "HoldStream": su(self.hold_stream),
            "Chat": ss(self.chat),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)
        generic: dict[str, grpc.RpcMethodHandler[Any, Any]] = {"Echo": uu(self.echo)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(GENERIC, generic),))


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="h2g", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.asynccontextmanager
async def serving(
    sockdir: str, recorder: Recorder, **kwargs: Any
) -> AsyncIterator[tuple[h2grpc.Server, str]]:
    """An h2grpc server with ``recorder`` on a socket in ``sockdir``, stopped at the end."""
    server = h2grpc.Server(**kwargs)
    recorder.register(server)
    path = os.path.join(sockdir, "grpc.sock")
    await server.listen_unix(path)
    try:
        yield server, path
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def channel_to(path: str) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"unix:{path}", options=CHANNEL_OPTIONS) as channel:
        yield channel


def unary(
    channel: grpc.aio.Channel, method: str, service: str = SERVICE
) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """A bytes-in/bytes-out unary callable for ``/service/method``."""
    return cast(
        "grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]",
        channel.unary_unary(f"/{service}/{method}"),
    )


def server_stream(
    channel: grpc.aio.Channel, method: str
) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
    """A bytes-in/bytes-out server-streaming callable for ``/SERVICE/method``."""
    return cast(
        "grpc.aio.UnaryStreamMultiCallable[bytes, bytes]",
        channel.unary_stream(f"/{SERVICE}/{method}"),
    )


class Env:
    """A served recorder and a grpcio channel to it."""

    def __init__(
        self, server: h2grpc.Server, path: str, recorder: Recorder, channel: grpc.aio.Channel
    ) -> None:
        self.server = server
        self.path = path
        self.rec = recorder
        self.channel = channel

    def unary(self, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        return unary(self.channel, method)

    def server_stream(self, method: str) -> grpc.aio.UnaryStreamMultiCallable[bytes, bytes]:
        return server_stream(self.channel, method)

    def client_stream(self, method: str) -> grpc.aio.StreamUnaryMultiCallable[bytes, bytes]:
        return cast(
            "grpc.aio.StreamUnaryMultiCallable[bytes, bytes]",
            self.channel.stream_unary(f"/{SERVICE}/{method}"),
        )

    def bidi(self, method: str) -> grpc.aio.StreamStreamMultiCallable[bytes, bytes]:
        return cast(
            "grpc.aio.StreamStreamMultiCallable[bytes, bytes]",
            self.channel.stream_stream(f"/{SERVICE}/{method}"),
        )


@pytest.fixture
async def env(sockdir: str) -> AsyncIterator[Env]:
    recorder = Recorder()
    async with serving(sockdir, recorder) as (server, path), channel_to(path) as channel:
        yield Env(server, path, recorder, channel)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds (fails after ``WAIT`` seconds)."""
    await wait_for_async(condition, WAIT, what)


async def within(awaitable: Awaitable[T]) -> T:
    async with asyncio.timeout(WAIT):
        return await awaitable


async def rpc_error(awaitable: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await within(awaitable)
    return info.value


# -- calls through grpcio's client ----------------------------------------------


async def test_unary_round_trip(env: Env) -> None:
    assert await env.unary("Echo")(b"hello") == b"hello"
    assert await env.unary("Echo")(b"") == b""


async def test_protobuf_typed_method(env: Env) -> None:
    call = env.channel.unary_unary(
        f"/{SERVICE}/Typed",
        request_serializer=timestamp_pb2.Timestamp.SerializeToString,
        response_deserializer=timestamp_pb2.Timestamp.FromString,
    )
    assert await call(timestamp_pb2.Timestamp(seconds=41)) == timestamp_pb2.Timestamp(seconds=42)


async def test_undecodable_request_is_internal_error(env: Env) -> None:
    # A truncated varint cannot be a Timestamp: grpc-go and grpcio answer INTERNAL.
    err = await rpc_error(env.unary("Typed")(b"\x08"))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert (err.details() or "").startswith("grpc: error unmarshalling request: ")
    assert "Timestamp" in (err.details() or "")


async def test_undecodable_message_in_a_client_stream_is_internal_error(env: Env) -> None:
    async def requests() -> AsyncIterator[bytes]:
        yield timestamp_pb2.Timestamp(seconds=1).SerializeToString()
        yield b"\x08"

    err = await rpc_error(env.client_stream("TypedTotal")(requests()))
    assert err.code() is grpc.StatusCode.INTERNAL
    assert (err.details() or "").startswith("grpc: error unmarshalling request: ")


async def test_server_stream_from_async_generator(env: Env) -> None:
    got = [m async for m in env.server_stream("Count")(b"50")]
    assert got == [b"%d" % i for i in range(50)]


async def test_server_stream_from_context_write(env: Env) -> None:
    call = env.server_stream("Writes")(b"20")
    got = [m async for m in call]
    assert got == [b"w%d" % i for i in range(20)]
    assert await call.code() is grpc.StatusCode.OK


@pytest.mark.parametrize("n", [0, 1, 5, 300])
async def test_server_stream_last_message_with_status(env: Env, n: int) -> None:
    """The marker changes how the messages leave, not which: all of them, in order."""
    call = env.server_stream("CountLastWithStatus")(b"%d" % n)
    got = [m async for m in call]
    assert got == [b"w%d" % i for i in range(n)]
    assert await call.code() is grpc.StatusCode.OK


async def test_held_last_message_goes_out_before_the_error(env: Env) -> None:
    call = env.server_stream("CountLastThenFail")(b"")
    assert await within(call.read()) == b"0"
    assert await within(call.read()) == b"1"
    err = await rpc_error(call.read())
    assert err.code() is grpc.StatusCode.UNKNOWN
    assert "stream broke" in (err.details() or "")


@pytest.mark.parametrize("n", [1, 3])
async def test_last_message_marker_keeps_the_wire(sockdir: str, n: int) -> None:
    """A marked stream's frames are an unmarked one's: the marker changes the work, not the bytes.

    Each message is its own DATA frame, the last one followed by the trailers,
    which the server's output coalescing puts in the same write.
    """

    async def frames(method: str) -> list[tuple[int, int, bytes]]:
        out: list[tuple[int, int, bytes]] = []
        async with serving(sockdir, Recorder()) as (_, path), raw(path) as client:
            client.begin(method)
            client.frame(h2grpc.DATA, h2grpc.END_STREAM, 1, b"\x00\x00\x00\x00\x01%d" % n)
            while (frame := await client.read_frame()) is not None:
                kind, flags, sid, payload = frame
                if sid == 1:
                    out.append((kind, flags, payload))
                    if flags & h2grpc.END_STREAM:
                        break
        return out

    marked = await frames("CountLastWithStatus")
    plain = await frames("Count")
    assert [(k, f) for k, f, _ in marked] == [(k, f) for k, f, _ in plain]
    data = [p for k, _, p in marked if k == h2grpc.DATA]
    assert data == [b"\x00" + len(m).to_bytes(4, "big") + m for m in (b"w%d" % i for i in range(n))]


@pytest.mark.parametrize("n", [0, 1, 300])
async def test_server_stream_of_encoded_messages(env: Env, n: int) -> None:
    call = env.server_stream("Encoded")(b"%d" % n)
    got = [m async for m in call]
    assert got == [pattern(i * 997 % 40_000) for i in range(n)]
    assert await call.code() is grpc.StatusCode.OK


async def test_server_stream_empty(env: Env) -> None:
    call = env.server_stream("Count")(b"0")
    assert [m async for m in call] == []
    assert await call.code() is grpc.StatusCode.OK


@pytest.mark.parametrize("method", ["Total", "ReadTotal"])
async def test_client_stream(env: Env, method: str) -> None:
    async def requests() -> AsyncIterator[bytes]:
        for i in range(30):
            yield b"x" * i

    assert await env.client_stream(method)(requests()) == b"30:%d" % sum(range(30))


async def test_bidi_stream_interleaves(env: Env) -> None:
    call = env.bidi("Chat")()
    for word in (b"one", b"two", b"three"):
        await call.write(word)
        assert await within(call.read()) == word.upper()
    await call.done_writing()
    assert await call.read() is grpc.aio.EOF
    assert await call.code() is grpc.StatusCode.OK


async def test_metadata_in_and_out(env: Env) -> None:
    call = env.unary("Meta")(
        b"",
        metadata=(("x-plain", "value 1"), ("x-blob-bin", b"\x00\x01\xfe\xff"), ("x-plain", "v2")),
        timeout=30,
    )
    assert await call == b"ok"
    # Values of one key keep their order (clients may regroup different keys).
    assert [v for k, v in env.rec.metadata if k == "x-plain"] == ["value 1", "v2"]
    assert [v for k, v in env.rec.metadata if k == "x-blob-bin"] == [b"\x00\x01\xfe\xff"]
    assert env.rec.time_remaining is not None
    assert 29 < env.rec.time_remaining <= 31  # grpcio rounds grpc-timeout up a little
    assert ("x-initial", "first") in tuple(await call.initial_metadata())
    trailing = tuple(await call.trailing_metadata())
    assert ("x-trailer", "t-value") in trailing
    assert ("x-trailer-bin", b"\x00\xff") in trailing
    assert env.rec.done_codes == [None]


async def test_metadata_larger_than_a_frame(sockdir: str) -> None:
    # Header blocks above the client's 16 KiB frame size go out as CONTINUATION frames.
    size = 100 * 1024
    options = (("grpc.max_metadata_size", 4 * MIB), ("grpc.absolute_max_metadata_size", 4 * MIB))
    async with (
        serving(sockdir, Recorder()) as (_server, path),
        grpc.aio.insecure_channel(f"unix:{path}", options=options) as channel,
    ):
        call = unary(channel, "BigTrailers")(b"%d" % size)
        assert await within(call) == b"ok"
        assert ("x-big-initial", "i" * size) in tuple(await call.initial_metadata())
        assert ("x-big-trailer", "t" * size) in tuple(await call.trailing_metadata())


async def test_no_deadline_means_no_time_remaining(env: Env) -> None:
    assert await env.unary("Meta")(b"") == b"ok"
    assert env.rec.time_remaining is None


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
async def test_abort_sends_code_details_and_trailers(env: Env, code: grpc.StatusCode) -> None:
    err = await rpc_error(env.unary("Abort")(f"{code.name}|image x: not found".encode()))
    assert err.code() is code
    assert err.details() == "image x: not found"
    assert ("x-why", "because") in tuple(err.trailing_metadata() or ())


@pytest.mark.parametrize(
    "details",
    [
        "100% done, 50%% left, %41 is not A",
        "naïve café ✓ 日本語 — ünïcødé",
        "tab\tand newline\nand CR\r and DEL\x7f end",
        "trailing percent %",
    ],
)
async def test_abort_details_round_trip_exactly(env: Env, details: str) -> None:
    err = await rpc_error(env.unary("Abort")(f"INVALID_ARGUMENT|{details}".encode()))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == details


async def test_set_code_without_abort(env: Env) -> None:
    err = await rpc_error(env.unary("SetCode")(b""))
    assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "not now: failed precondition"


async def test_handler_exception_is_unknown(env: Env) -> None:
    err = await rpc_error(env.unary("Fail")(b""))
    assert err.code() is grpc.StatusCode.UNKNOWN
    assert "boom 100%" in (err.details() or "")
    # The server goes on serving the channel.
    assert await env.unary("Echo")(b"after") == b"after"


async def test_stream_abort_after_messages(env: Env) -> None:
    call = env.server_stream("CountThenAbort")(b"")
    assert await within(call.read()) == b"0"
    assert await within(call.read()) == b"1"
    err = await rpc_error(call.read())
    assert err.code() is grpc.StatusCode.DATA_LOSS
    assert err.details() == "lost the rest"


async def test_stream_exception_after_messages_is_unknown(env: Env) -> None:
    call = env.server_stream("CountThenFail")(b"")
    assert await within(call.read()) == b"0"
    err = await rpc_error(call.read())
    assert err.code() is grpc.StatusCode.UNKNOWN
    assert "stream broke" in (err.details() or "")


async def test_unknown_method_and_service_are_unimplemented(env: Env) -> None:
    err = await rpc_error(unary(env.channel, "Nope")(b""))
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED
    assert err.details() == f"unknown method Nope for service {SERVICE}"
    err = await rpc_error(unary(env.channel, "Get", "no.such.v1.Service")(b""))
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED
    assert err.details() == "unknown service no.such.v1.Service"


async def test_generic_only_service_is_served(env: Env) -> None:
    assert await unary(env.channel, "Echo", GENERIC)(b"g") == b"g"


async def test_deadline_cancels_the_handler(env: Env) -> None:
    err = await rpc_error(env.unary("Slow")(b"", timeout=0.2))
    assert err.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    await within(env.rec.cancelled.wait())
    await within(asyncio.gather(*env.rec.tasks))
    await until(lambda: not any(c.streams for c in env.server.connections), "streams released")


async def test_client_cancel_of_a_stream_reaches_the_handler(env: Env) -> None:
    call = env.server_stream("FirstThenHang")(b"")
    assert await within(call.read()) == b"first"
    await within(env.rec.started.wait())
    assert call.cancel()
    await within(env.rec.cancelled.wait())
    assert env.rec.cancelled_flag is True
    assert await call.code() is grpc.StatusCode.CANCELLED
    await until(lambda: not any(c.streams for c in env.server.connections), "streams released")
    assert await env.unary("Echo")(b"still") == b"still"


async def test_client_cancel_of_a_client_stream(env: Env) -> None:
    call = env.client_stream("HoldStream")()
    await call.write(b"part")
    await within(env.rec.started.wait())
    call.cancel()
    await within(env.rec.cancelled.wait())
    assert env.rec.cancelled_flag is True


async def test_large_response(env: Env) -> None:
    size = 7 * MIB + 123
    assert await within(env.unary("Big")(b"%d" % size)) == pattern(size)


async def test_large_request(env: Env) -> None:
    # Larger than the stream window the server advertises (STREAM_WINDOW).
    data = pattern(h2grpc.STREAM_WINDOW + 3 * MIB)
    assert await within(env.unary("Echo")(data)) == data


async def test_large_client_stream_messages(env: Env) -> None:
    async def requests() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield pattern(3 * MIB)

    got = await within(env.client_stream("Total")(requests()))
    assert got == b"6:%d" % (18 * MIB)


async def test_messages_around_the_handover_size_arrive_whole(env: Env) -> None:
    # A message of HANDOVER bytes or more that fills its stream's buffer is
    # passed on as a view of that buffer: a method without a deserializer
    # still gets bytes, a protobuf one parses the view.
    call = env.bidi("Chat")()
    for size in (h2grpc.HANDOVER - 1, h2grpc.HANDOVER, 10, 3 * MIB, h2grpc.HANDOVER + 1):
        data = pattern(size)
        await call.write(data)
        assert await within(call.read()) == data.upper(), size
    await call.done_writing()
    value = pattern(3 * MIB + 7)
    request = wrappers_pb2.BytesValue(value=value).SerializeToString()
    assert await within(env.unary("Digest")(request)) == hashlib.sha256(value).digest()


async def test_big_message_after_small_unacknowledged_ones(env: Env) -> None:
    # The small messages are taken but not yet acknowledged (less than half
    # the window): the big one needs more than what is left of the window.
    small = 100 * 1024
    count = (h2grpc.STREAM_WINDOW // 2 - 1) // (small + 5)
    big = h2grpc.STREAM_WINDOW // 2 + MIB

    async def requests() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield pattern(small)
        yield pattern(big)

    got = await within(env.client_stream("Total")(requests()))
    assert got == b"%d:%d" % (count + 1, count * small + big)


def writer_blocked(server: h2grpc.Server) -> bool:
    """Whether a stream's writer waits for the peer (flow-control window or transport)."""
    for conn in server.connections:
        if conn.paused is not None and not conn.paused.done():
            return True
        if any(s.window_waiter is not None for s in conn.window_waiters):
            return True
    return False


def server_buffered(server: h2grpc.Server) -> int:
    """Bytes the server holds for its peers: queued frames and transport buffers."""
    total = 0
    for conn in server.connections:
        total += sum(map(len, conn.out))
        if conn.transport is not None:
            total += conn.transport.get_write_buffer_size()
    return total


async def test_server_stream_waits_for_a_slow_reader(sockdir: str) -> None:
    rec = Recorder()
    total = 1024  # 1 GiB if nothing held the handler back
    # Without BDP probing grpcio keeps its stream window fixed, so the bound is exact.
    options = (*CHANNEL_OPTIONS, ("grpc.http2.bdp_probe", 0))
    async with (
        serving(sockdir, rec) as (server, path),
        grpc.aio.insecure_channel(f"unix:{path}", options=options) as channel,
    ):
        call = server_stream(channel, "Flood")(b"%d" % total)
        await within(rec.started.wait())
        await until(lambda: writer_blocked(server), "the handler to wait for the reader")
        # Calls on the same connection go on meanwhile (the client keeps reading
        # the socket) and the stream stays held: what went out is bounded by the
        # client's window, not by what the handler would produce.
        for i in range(5):
            assert await within(unary(channel, "Echo")(b"tick %d" % i)) == b"tick %d" % i
        await until(lambda: writer_blocked(server), "the handler to wait for the reader")
        ahead = rec.produced
        assert ahead <= 8
        assert server_buffered(server) < 2 * MIB
        # Reading lets the handler go on, in order and intact, never far ahead.
        for i in range(64):
            assert await within(call.read()) == bytes((i % 256,)) * MIB
            assert rec.produced <= i + 1 + ahead + 1
            assert server_buffered(server) < 2 * MIB
        call.cancel()
        await within(rec.tasks[0])
        assert rec.produced < 64 + ahead + 2


async def test_request_above_max_receive_is_resource_exhausted(sockdir: str) -> None:
    async with (
        serving(sockdir, Recorder(), max_receive_message_length=1024) as (_server, path),
        channel_to(path) as channel,
    ):
        echo = unary(channel, "Echo")
        assert await echo(b"x" * 1024) == b"x" * 1024
        err = await rpc_error(echo(b"x" * 1025))
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.details() == "grpc: received message larger than max (1025 vs. 1024)"
        assert await echo(b"fine") == b"fine"


async def test_response_above_max_send_is_resource_exhausted(sockdir: str) -> None:
    async with (
        serving(sockdir, Recorder(), max_send_message_length=4096) as (_server, path),
        channel_to(path) as channel,
    ):
        big = unary(channel, "Big")
        assert len(await big(b"4096")) == 4096
        err = await rpc_error(big(b"4097"))
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max (4097 vs. 4096)" in (err.details() or "")


async def test_streamed_message_above_max_send_is_resource_exhausted(sockdir: str) -> None:
    async with (
        serving(sockdir, Recorder(), max_send_message_length=4096) as (_server, path),
        channel_to(path) as channel,
    ):
        call = server_stream(channel, "BigStream")(b"4097")
        assert await within(call.read()) == b"small"
        err = await rpc_error(call.read())
        assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max (4097 vs. 4096)" in (err.details() or "")


async def test_concurrent_unary_calls_on_one_channel(env: Env) -> None:
    echo = env.unary("Echo")
    payloads = [b"call-%d-" % i + pattern(i * 97) for i in range(200)]
    got = await within(asyncio.gather(*(echo(p) for p in payloads)))
    assert got == payloads


class Recording(grpc.aio.ServerInterceptor):
    """Logs (name, method) and passes the call on."""

    def __init__(self, name: str, seen: list[tuple[str, str]]) -> None:
        self.name = name
        self.seen = seen

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        self.seen.append((self.name, handler_call_details.method))
        return await continuation(handler_call_details)


class TokenGate(grpc.aio.ServerInterceptor):
    """Answers PERMISSION_DENIED unless the call carries ``x-token: yes``."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        metadata = dict(handler_call_details.invocation_metadata)
        if metadata.get("x-token") == "yes":
            return await continuation(handler_call_details)

        async def deny(request: bytes, context: Context) -> bytes:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no token")
            return b""

        return cast("grpc.RpcMethodHandler[Req, Resp]", grpc.unary_unary_rpc_method_handler(deny))


async def test_interceptors_apply_in_order(sockdir: str) -> None:
    seen: list[tuple[str, str]] = []
    interceptors = [Recording("outer", seen), TokenGate(), Recording("inner", seen)]
    async with (
        serving(sockdir, Recorder(), interceptors=interceptors) as (_server, path),
        channel_to(path) as channel,
    ):
        echo = unary(channel, "Echo")
        err = await rpc_error(echo(b"x"))
        assert err.code() is grpc.StatusCode.PERMISSION_DENIED
        assert err.details() == "no token"
        assert seen == [("outer", f"/{SERVICE}/Echo")]
        seen.clear()
        assert await echo(b"y", metadata=(("x-token", "yes"),)) == b"y"
        assert seen == [("outer", f"/{SERVICE}/Echo"), ("inner", f"/{SERVICE}/Echo")]


# -- protocol abuse through a raw socket ---------------------------------------------


class RawClient:
    """Frames over a plain unix socket: what a broken or hostile client can send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.bodies: dict[int, bytes] = {}

    @classmethod
    async def connect(cls, path: str) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(path)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def frame(self, kind: int, flags: int, sid: int, payload: bytes = b"") -> None:
        self.send(struct.pack(">I", len(payload))[1:] + bytes((kind, flags)))
        self.send(struct.pack(">I", sid) + payload)

    def start(self) -> None:
        """The client preface and an empty SETTINGS frame."""
        self.send(h2grpc.PREFACE)
        self.frame(h2grpc.SETTINGS, 0, 0)

    def begin(self, method: str, *extra: tuple[str, str], end: bool = False) -> None:
        """The preface, then stream 1 calling ``method`` (``end``: no request follows)."""
        self.start()
        self.headers(1, method, *extra, end=end)

    def headers(self, sid: int, method: str, *extra: tuple[str, str], end: bool = False) -> None:
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/{SERVICE}/{method}"),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *extra,
            ]
        )
        flags = h2grpc.END_HEADERS | (h2grpc.END_STREAM if end else 0)
        self.frame(h2grpc.HEADERS, flags, sid, block)

    async def read_frame(self) -> tuple[int, int, int, bytes] | None:
        """The next frame (type, flags, stream, payload); None at end of stream."""
        try:
            head = await within(self.reader.readexactly(9))
            payload = await within(self.reader.readexactly(int.from_bytes(head[:3], "big")))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return None
        return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload

    async def settings(self) -> dict[int, int]:
        """The server's first SETTINGS frame."""
        frame = await self.read_frame()
        assert frame is not None
        assert frame[0] == h2grpc.SETTINGS
        payload = frame[3]
        return dict(struct.unpack_from(">HI", payload, off) for off in range(0, len(payload), 6))

    async def goaway(self) -> tuple[int, bytes]:
        """Read to the GOAWAY frame: its (error code, debug text); then expect the close."""
        while True:
            frame = await self.read_frame()
            assert frame is not None, "connection closed without GOAWAY"
            if frame[0] == h2grpc.GOAWAY:
                break
        await self.until_closed()
        payload = frame[3]
        return int.from_bytes(payload[4:8], "big"), payload[8:]

    async def response(self, sid: int) -> list[tuple[str, str]]:
        """All header fields the server sends on ``sid`` up to END_STREAM (DATA to ``bodies``)."""
        fields: list[tuple[str, str]] = []
        body = bytearray()
        while True:
            frame = await self.read_frame()
            assert frame is not None, "connection closed before the response ended"
            kind, flags, stream, payload = frame
            if stream != sid:
                continue
            if kind == h2grpc.HEADERS:
                fields.extend((str(k), str(v)) for k, v in self.decoder.decode(payload, raw=False))
            elif kind == h2grpc.DATA:
                body += payload
            if kind == h2grpc.RST_STREAM or flags & h2grpc.END_STREAM:
                self.bodies[sid] = bytes(body)
                return fields

    async def until_closed(self) -> None:
        """Read (and drop) frames until the server closes the connection."""
        while await self.read_frame() is not None:
            pass

    async def reset_code(self, sid: int) -> int:
        """The error code of the RST_STREAM the server sends on ``sid``."""
        while True:
            frame = await self.read_frame()
            assert frame is not None, "connection closed before RST_STREAM"
            if frame[0] == h2grpc.RST_STREAM and frame[2] == sid:
                return int.from_bytes(frame[3], "big")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


async def assert_connection_error(
    env: Env, client: RawClient, code: int, text: bytes | None = None
) -> None:
    """GOAWAY ``code`` (debug ``text``) closes this connection; the server serves on."""
    got_code, got_text = await client.goaway()
    assert got_code == code
    if text is not None:
        assert got_text == text
    assert await env.unary("Echo")(b"others") == b"others"


@contextlib.asynccontextmanager
async def raw(path: str) -> AsyncIterator[RawClient]:
    client = await RawClient.connect(path)
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"hello\r\n",
        b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n",  # HTTP/1.1 where 2.0 belongs
    ],
)
async def test_garbage_instead_of_preface(env: Env, garbage: bytes) -> None:
    async with raw(env.path) as client:
        client.send(garbage)
        await assert_connection_error(
            env, client, h2grpc.PROTOCOL_ERROR, b"not an HTTP/2 client preface"
        )
    await until(lambda: len(env.server.connections) == 1, "the broken connection to go")


@pytest.mark.parametrize(
    "block",
    [
        b"\x80",  # indexed field 0
        b"\xff\x80\x80\x80\x80\x01",  # index far outside the tables
        b"\x40\x85ab",  # literal whose name runs past the block
        b"\x3f\xe9\x26",  # table size update (5000) above the advertised 4096
    ],
)
async def test_malformed_header_block(env: Env, block: bytes) -> None:
    async with raw(env.path) as client:
        client.start()
        client.frame(h2grpc.HEADERS, h2grpc.END_HEADERS | h2grpc.END_STREAM, 1, block)
        await assert_connection_error(env, client, h2grpc.COMPRESSION_ERROR)


async def test_header_block_split_over_continuation_frames(env: Env) -> None:
    async with raw(env.path) as client:
        client.start()
        block = client.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", f"/{SERVICE}/Echo"),
                (":authority", "localhost"),
                ("content-type", "application/grpc"),
                ("x-padding", "p" * 300),
            ]
        )
        client.frame(h2grpc.HEADERS, 0, 1, block[:10])
        client.frame(h2grpc.CONTINUATION, 0, 1, block[10:100])
        client.frame(h2grpc.CONTINUATION, h2grpc.END_HEADERS, 1, block[100:])
        client.frame(h2grpc.DATA, h2grpc.END_STREAM, 1, b"\x00\x00\x00\x00\x02hi")
        fields = await client.response(1)
    assert ("grpc-status", "0") in fields


async def test_padded_and_prioritised_frames(env: Env) -> None:
    async with raw(env.path) as client:
        client.start()
        block = client.encoder.encode(
            [(":method", "POST"), (":path", f"/{SERVICE}/Echo"), ("te", "trailers")]
        )
        # HEADERS: pad length, stream dependency + weight, block, padding.
        payload = bytes((7,)) + struct.pack(">IB", 0, 15) + block + b"\x00" * 7
        flags = h2grpc.END_HEADERS | h2grpc.PADDED | h2grpc.PRIORITY_FLAG
        client.frame(h2grpc.HEADERS, flags, 1, payload)
        message = b"\x00\x00\x00\x00\x05hello"
        data = bytes((20,)) + message + b"\x00" * 20
        client.frame(h2grpc.DATA, h2grpc.PADDED | h2grpc.END_STREAM, 1, data)
        fields = await client.response(1)
    assert client.bodies[1] == message
    assert ("grpc-status", "0") in fields


async def test_frame_between_headers_and_continuation(env: Env) -> None:
    async with raw(env.path) as client:
        client.start()
        client.frame(h2grpc.HEADERS, 0, 1, client.encoder.encode([(":path", "/x/y")]))
        client.frame(h2grpc.PING, 0, 0, b"\x00" * 8)
        await assert_connection_error(env, client, h2grpc.PROTOCOL_ERROR, b"expected CONTINUATION")


async def test_endless_continuation_is_refused(env: Env) -> None:
    # A header block that never ends must not grow without bound in the server.
    async with raw(env.path) as client:
        advertised = (await client.settings())[h2grpc.SETTINGS_MAX_HEADER_LIST_SIZE]
        client.start()
        first = client.encoder.encode([(":path", "/x/y")])
        client.frame(h2grpc.HEADERS, 0, 1, first)
        # One byte over the limit, and nothing after it: the server closes at
        # once, and what the client still had to write would break the pipe.
        rest = advertised + 1 - len(first)
        chunk = 256 * 1024
        for off in range(0, rest, chunk):
            client.frame(h2grpc.CONTINUATION, 0, 1, b"\x00" * min(chunk, rest - off))
        await assert_connection_error(env, client, h2grpc.PROTOCOL_ERROR, b"header block too large")


async def test_even_stream_id_is_a_protocol_error(env: Env) -> None:
    async with raw(env.path) as client:
        client.start()
        client.headers(2, "Echo", end=True)
        await assert_connection_error(env, client, h2grpc.PROTOCOL_ERROR, b"invalid stream id 2")


async def test_frame_above_advertised_max_size(env: Env) -> None:
    async with raw(env.path) as client:
        advertised = (await client.settings())[h2grpc.SETTINGS_MAX_FRAME_SIZE]
        client.begin("Total")
        # Only the frame header: the server must refuse it before any payload.
        client.send(struct.pack(">I", advertised + 1)[1:] + bytes((h2grpc.DATA, 0)))
        client.send(struct.pack(">I", 1))
        await assert_connection_error(env, client, h2grpc.FRAME_SIZE_ERROR, b"frame too large")


async def test_frame_of_advertised_max_size_is_accepted(env: Env) -> None:
    async with raw(env.path) as client:
        advertised = (await client.settings())[h2grpc.SETTINGS_MAX_FRAME_SIZE]
        client.begin("Total")
        message = b"\x00" + (advertised - 5).to_bytes(4, "big") + b"z" * (advertised - 5)
        client.frame(h2grpc.DATA, h2grpc.END_STREAM, 1, message)
        fields = await client.response(1)
    assert ("grpc-status", "0") in fields


async def test_connection_lost_mid_message_cancels_the_handler(env: Env) -> None:
    assert await env.unary("Echo")(b"connect") == b"connect"  # the channel's one connection
    async with raw(env.path) as client:
        client.begin("HoldStream")
        # One DATA frame with half a gRPC message, then half a DATA frame.
        client.frame(h2grpc.DATA, 0, 1, b"\x00" + (1000).to_bytes(4, "big") + b"a" * 400)
        client.send((200).to_bytes(3, "big") + bytes((h2grpc.DATA, 0)) + (1).to_bytes(4, "big"))
        client.send(b"b" * 100)
        await client.writer.drain()
        await within(env.rec.started.wait())
    await within(env.rec.cancelled.wait())
    await within(asyncio.gather(*env.rec.tasks))
    await until(lambda: len(env.server.connections) == 1, "the lost connection to go")
    for conn in env.server.connections:
        assert not conn.streams
    assert await env.unary("Echo")(b"others") == b"others"


async def test_server_enforces_grpc_timeout(env: Env) -> None:
    # A raw client does not enforce its deadline: the server must end the call.
    async with raw(env.path) as client:
        client.begin("Slow", ("grpc-timeout", "100m"))
        client.frame(h2grpc.DATA, h2grpc.END_STREAM, 1, b"\x00\x00\x00\x00\x00")
        fields = await client.response(1)
    assert ("grpc-status", str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])) in fields
    assert ("grpc-message", "context deadline exceeded") in fields
    await within(env.rec.cancelled.wait())


async def test_unary_without_request_message_is_internal(env: Env) -> None:
    async with raw(env.path) as client:
        client.begin("Echo", end=True)
        fields = await client.response(1)
    assert ("grpc-status", str(grpc.StatusCode.INTERNAL.value[0])) in fields
    assert ("grpc-message", "grpc: no request message received") in fields


async def test_compressed_message_is_refused(env: Env) -> None:
    async with raw(env.path) as client:
        client.begin("Echo", ("grpc-encoding", "gzip"))
        client.frame(h2grpc.DATA, h2grpc.END_STREAM, 1, b"\x01\x00\x00\x00\x01x")
        fields = await client.response(1)
    assert ("grpc-status", str(grpc.StatusCode.UNIMPLEMENTED.value[0])) in fields


# -- graceful stop -------------------------------------------------------------------


async def test_stop_lets_in_flight_calls_finish_and_refuses_new_ones(sockdir: str) -> None:
    rec = Recorder()
    async with serving(sockdir, rec) as (server, path), channel_to(path) as channel:
        assert await unary(channel, "Echo")(b"connect") == b"connect"  # an idle connection
        async with raw(path) as busy, raw(path) as idle:
            busy.begin("Slow")
            busy.frame(h2grpc.DATA, h2grpc.END_STREAM, 1, b"\x00\x00\x00\x00\x00")
            idle.start()
            await within(rec.started.wait())
            await until(lambda: len(server.connections) == 3, "the raw connections")
            started = time.monotonic()
            stopping = asyncio.ensure_future(server.stop(30))
            await until(lambda: server.stopping, "stop to begin")

            # Idle connections are told to go away and closed at once.
            code, _ = await idle.goaway()
            assert code == h2grpc.NO_ERROR
            err = await rpc_error(unary(channel, "Echo")(b"new", timeout=5))
            assert err.code() is grpc.StatusCode.UNAVAILABLE
            # New connections are refused, and so is a new stream on a busy one.
            with pytest.raises((ConnectionRefusedError, FileNotFoundError)):
                await RawClient.connect(path)
            busy.headers(3, "Echo", end=True)
            assert await busy.reset_code(3) == h2grpc.REFUSED_STREAM

            # The call in flight finishes; then its connection closes and stop returns.
            assert not stopping.done()
            rec.gate.set()
            assert ("grpc-status", "0") in await busy.response(1)
            await busy.until_closed()
            await within(stopping)
            assert time.monotonic() - started < 10
            assert not server.connections


async def test_stop_cancels_a_hung_handler_after_the_grace(sockdir: str) -> None:
    rec = Recorder()
    async with serving(sockdir, rec) as (server, path), channel_to(path) as channel:
        slow = asyncio.ensure_future(unary(channel, "Slow")(b""))
        await within(rec.started.wait())
        started = time.monotonic()
        await within(server.stop(0.5))
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 5
        await within(rec.cancelled.wait())
        err = await rpc_error(slow)
        assert err.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
        assert not server.connections


# -- the Go ctr ------------------------------------------------------------------------

GO_CTR = "/usr/bin/ctr"


class VersionService(version_pb2_grpc.VersionServicer):
    async def Version(  # noqa: N802
        self, request: empty_pb2.Empty, context: Context
    ) -> version_pb2.VersionResponse:
        return version_pb2.VersionResponse(version="v9.8.7-h2grpc", revision="r3v")


class IntrospectionService(introspection_pb2_grpc.IntrospectionServicer):
    async def Server(  # noqa: N802
        self, request: empty_pb2.Empty, context: Context
    ) -> introspection_pb2.ServerResponse:
        return introspection_pb2.ServerResponse(uuid="0a1b2c3d-h2grpc")


class NamespacesService(namespace_pb2_grpc.NamespacesServicer):
    NAMESPACES: Final = {"alpha": {"team": "h2"}, "beta": {}}

    async def List(  # noqa: N802
        self, request: namespace_pb2.ListNamespacesRequest, context: Context
    ) -> namespace_pb2.ListNamespacesResponse:
        return namespace_pb2.ListNamespacesResponse(
            namespaces=[
                namespace_pb2.Namespace(name=name, labels=labels)
                for name, labels in self.NAMESPACES.items()
            ]
        )

    async def Get(  # noqa: N802
        self, request: namespace_pb2.GetNamespaceRequest, context: Context
    ) -> namespace_pb2.GetNamespaceResponse:
        labels = self.NAMESPACES.get(request.name)
        if labels is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"namespace {request.name}: not found")
        return namespace_pb2.GetNamespaceResponse(
            namespace=namespace_pb2.Namespace(name=request.name, labels=labels)
        )


async def run_go_ctr(path: str, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        GO_CTR,
        "-a",
        path,
        "--timeout",
        "10s",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await within(proc.communicate())
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_go_ctr_against_h2grpc(sockdir: str) -> None:
    if not os.access(GO_CTR, os.X_OK):
        reason = f"containerd's Go ctr is not installed at {GO_CTR}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    server = h2grpc.Server()
    as_grpc = cast("grpc.aio.Server", server)
    # Only what ctr calls is implemented; the generated bases answer UNIMPLEMENTED.
    introspection = IntrospectionService()  # type: ignore[abstract]
    namespaces_service = NamespacesService()  # type: ignore[abstract]
    version_pb2_grpc.add_VersionServicer_to_server(VersionService(), as_grpc)
    introspection_pb2_grpc.add_IntrospectionServicer_to_server(introspection, as_grpc)
    namespace_pb2_grpc.add_NamespacesServicer_to_server(namespaces_service, as_grpc)
    path = os.path.join(sockdir, "ctr.sock")
    await server.listen_unix(path)
    try:
        version = await run_go_ctr(path, "version")
        namespaces = await run_go_ctr(path, "namespaces", "ls")
    finally:
        await server.stop(None)
    server_part = version.split("Server:", 1)[1]
    assert "v9.8.7-h2grpc" in server_part
    assert "r3v" in server_part
    rows = [line.split() for line in namespaces.splitlines()]
    assert rows == [["NAME", "LABELS"], ["alpha", "team=h2"], ["beta"]]


# -- fast paths ------------------------------------------------------------------


class Observed:
    """An observer (``GrpcMetrics``' shape) that records what it is told."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, str]] = []
        self.ends: list[tuple[str, str, str]] = []

    def started(self, full_method: str, rpc_type: str) -> None:
        self.starts.append((full_method, rpc_type))

    def handled(self, full_method: str, rpc_type: str, code: str, seconds: float) -> None:
        self.ends.append((full_method, rpc_type, code))


async def test_fast_path_answers_without_the_handler(sockdir: str) -> None:
    observed = Observed()
    recorder = Recorder()
    seen: list[tuple[bytes, tuple[tuple[str, str | bytes], ...]]] = []

    def fast(request: bytes, metadata: tuple[tuple[str, str | bytes], ...]) -> bytes | None:
        seen.append((request, metadata))
        if request == b"decline":
            return None
        if request == b"raise":
            msg = "the fast path cannot"
            raise ValueError(msg)
        return b"fast:" + request

    async with serving(sockdir, recorder, observer=observed) as (server, path):
        server.add_fast_path(f"/{SERVICE}/Echo", fast)
        async with channel_to(path) as channel:
            call = unary(channel, "Echo")
            assert await call(b"x", metadata=(("k", "v"),)) == b"fast:x"
            # None or an error: the handler serves the call as if there were no fast path
            assert await call(b"decline") == b"decline"
            assert await call(b"raise") == b"raise"
            # a request bigger than one frame still goes through the fast path
            big = pattern(100_000)
            assert await call(big) == b"fast:" + big
    assert ("k", "v") in seen[0][1]
    assert [r for r, _ in seen] == [b"x", b"decline", b"raise", big]
    method = f"/{SERVICE}/Echo"
    assert observed.starts == [(method, "unary")] * 4
    assert [c for _, _, c in observed.ends] == ["OK"] * 4


async def test_fast_path_is_ignored_behind_interceptors(sockdir: str) -> None:
    recorder = Recorder()
    order: list[tuple[str, str]] = []
    async with serving(sockdir, recorder, interceptors=[Recording("outer", order)]) as (
        server,
        path,
    ):
        server.add_fast_path(f"/{SERVICE}/Echo", lambda request, metadata: b"fast")
        async with channel_to(path) as channel:
            assert await unary(channel, "Echo")(b"slow") == b"slow"
    assert order == [("outer", f"/{SERVICE}/Echo")]


async def test_fast_path_stream_reset_before_the_request_ends(sockdir: str) -> None:
    """A client that resets a fast-path call before its request is complete leaks nothing."""
    recorder = Recorder()
    async with serving(sockdir, recorder) as (server, path):
        server.add_fast_path(f"/{SERVICE}/Echo", lambda request, metadata: b"fast")
        async with channel_to(path) as channel:
            stream_call = cast(
                "grpc.aio.StreamUnaryMultiCallable[bytes, bytes]",
                channel.stream_unary(f"/{SERVICE}/Echo"),
            )
            call = stream_call()
            await call.write(b"part")  # a message, but no END_STREAM yet
            await until(lambda: any(c.streams for c in server.connections), "the stream")
            call.cancel()
            await until(lambda: not any(c.streams for c in server.connections), "the stream to go")
            # the connection still serves, through the fast path
            assert await unary(channel, "Echo")(b"next") == b"fast"


async def test_a_client_that_does_not_read_is_not_read_either(env: Env) -> None:
    """Back-pressure: once the answers pile up, the server stops reading that connection.

    The client opens large windows, asks for 16 MiB of answers and never reads
    them; the server fills its transport up to the high-water mark, pauses
    reading, and so answers none of the PINGs that follow.
    """
    async with raw(env.path) as client:
        client.send(h2grpc.PREFACE)
        client.frame(
            h2grpc.SETTINGS, 0, 0, struct.pack(">HI", h2grpc.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 30)
        )
        client.frame(h2grpc.WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 30))
        message = b"\x00\x00\x00\x00\x07" + b"%07d" % MIB
        for sid in range(1, 33, 2):
            client.headers(sid, "Big")
            client.frame(h2grpc.DATA, h2grpc.END_STREAM, sid, message)
        await client.writer.drain()
        await until(
            lambda: any(c.paused is not None for c in env.server.connections),
            "the transport to push back",
        )
        (conn,) = [c for c in env.server.connections if c.paused is not None]
        assert conn.transport is not None
        assert not conn.transport.is_reading()
        # Queued: at most the high-water mark, one writer's chunk and a few frames more.
        assert conn.transport.get_write_buffer_size() < 2 * MIB
        for _ in range(100):
            client.frame(h2grpc.PING, 0, 0, b"12345678")
        await client.writer.drain()
        assert conn.transport.get_write_buffer_size() < 2 * MIB
    await until(lambda: len(env.server.connections) <= 1, "the connection to go")
    assert await env.unary("Echo")(b"others") == b"others"
