"""Events over a real grpc.aio server (Publish/Forward/Subscribe) and ttrpc Forward."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import timestamp_pb2

from pycontainerd.api import typeurl
from pycontainerd.api.events import content_pb2, task_pb2
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.services.ttrpc.events.v1 import events_pb2 as ttrpc_events_pb2
from pycontainerd.api.ttrpc.client import Client, ServiceClient
from pycontainerd.api.ttrpc.server import Server
from pycontainerd.api.types import event_pb2
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.plugin import GrpcService, PluginType, TtrpcService
from pycontainerd.core.testing import wait_for_async
from pycontainerd.events import plugin as events_plugin
from pycontainerd.events.exchange import Exchange, unpack_event
from pycontainerd.events.service import TTRPC_SPEC, EventsService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(dir="/tmp", prefix="ev-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def exchange() -> Exchange:
    return Exchange(queue_size=16)


@pytest.fixture
async def stub(sockdir: str, exchange: Exchange) -> AsyncIterator[events_pb2_grpc.EventsAsyncStub]:
    server = grpc.aio.server()
    EventsService(exchange).register(server)
    address = f"unix://{sockdir}/grpc.sock"
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield events_pb2_grpc.EventsStub(channel)
    finally:
        await server.stop(None)


NS = (("containerd-namespace", "default"),)


async def test_publish_subscribe_round_trip(
    stub: events_pb2_grpc.EventsAsyncStub, exchange: Exchange
) -> None:
    call = stub.Subscribe(events_pb2.SubscribeRequest(filters=['topic~="/content/"']))
    await wait_for_async(lambda: exchange.subscribers == 1)
    await stub.Publish(
        events_pb2.PublishRequest(
            topic="/other/thing", event=typeurl.pack(content_pb2.ContentDelete(digest="no"))
        ),
        metadata=NS,
    )
    await stub.Publish(
        events_pb2.PublishRequest(
            topic="/content/delete", event=typeurl.pack(content_pb2.ContentDelete(digest="yes"))
        ),
        metadata=NS,
    )
    env = await asyncio.wait_for(call.read(), 5)
    assert isinstance(env, event_pb2.Envelope)
    assert (env.namespace, env.topic) == ("default", "/content/delete")
    assert env.event.type_url == "containerd.events.ContentDelete"
    assert typeurl.unpack(env.event).digest == "yes"
    assert env.timestamp.seconds > 0
    call.cancel()
    await wait_for_async(lambda: exchange.subscribers == 0)


async def test_publish_without_namespace(stub: events_pb2_grpc.EventsAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Publish(
            events_pb2.PublishRequest(topic="/x", event=typeurl.pack(task_pb2.TaskExit()))
        )
    assert excinfo.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (
        excinfo.value.details()
        == "failed publishing event: namespace is required: failed precondition"
    )


async def test_publish_bad_topic(stub: events_pb2_grpc.EventsAsyncStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Publish(events_pb2.PublishRequest(topic="x"), metadata=NS)
    assert excinfo.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details() == "envelope topic \"x\": must start with '/': invalid argument"


async def test_forward_and_its_validation(
    stub: events_pb2_grpc.EventsAsyncStub, exchange: Exchange
) -> None:
    sub = exchange.subscribe()
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC))
    env = event_pb2.Envelope(
        timestamp=ts,
        namespace="n2",
        topic="/tasks/exit",
        event=typeurl.pack(task_pb2.TaskExit(id="t")),
    )
    await stub.Forward(events_pb2.ForwardRequest(envelope=env))
    got = await asyncio.wait_for(anext(sub), 5)
    assert got.event.type_url == "containerd.events.TaskExit"
    assert got.timestamp == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert (got.namespace, got.topic) == ("n2", "/tasks/exit")

    no_ts = event_pb2.Envelope(namespace="n2", topic="/tasks/exit")
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await stub.Forward(events_pb2.ForwardRequest(envelope=no_ts))
    assert excinfo.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details() == "timestamp must be set on forwarded event: invalid argument"


async def test_subscribe_bad_filter(stub: events_pb2_grpc.EventsAsyncStub) -> None:
    call = stub.Subscribe(events_pb2.SubscribeRequest(filters=["topic=x"]))
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call.read()
    assert excinfo.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "parse error" in (excinfo.value.details() or "")


async def test_slow_grpc_subscriber_ends_with_resource_exhausted(
    stub: events_pb2_grpc.EventsAsyncStub, exchange: Exchange
) -> None:
    call = stub.Subscribe(events_pb2.SubscribeRequest())
    await wait_for_async(lambda: exchange.subscribers == 1)
    # Publish far more than the queue holds without reading: the server-side
    # generator stalls once gRPC's flow-control window is full.
    big = task_pb2.TaskExit(id="x" * 60_000)
    for _ in range(400):
        await stub.Publish(
            events_pb2.PublishRequest(topic="/tasks/exit", event=typeurl.pack(big)), metadata=NS
        )
        if exchange.subscribers == 0:
            break
    assert exchange.subscribers == 0
    read = 0

    async def read_to_the_end() -> None:
        nonlocal read
        while True:
            msg = await asyncio.wait_for(call.read(), 5)
            assert msg is not grpc.aio.EOF
            read += 1

    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await read_to_the_end()
    assert excinfo.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "dropped after 16 queued events" in (excinfo.value.details() or "")
    assert read >= 16


async def test_ttrpc_forward(sockdir: str, exchange: Exchange) -> None:
    service = EventsService(exchange)
    assert isinstance(service, TtrpcService)
    assert isinstance(service, GrpcService)
    sub = exchange.subscribe("namespace==shimns")
    path = f"{sockdir}/ttrpc.sock"
    async with Server() as server:
        service.register_ttrpc(server)
        await server.listen_unix(path)
        async with await Client.connect(f"unix://{path}") as client:
            events = ServiceClient(client, TTRPC_SPEC)
            ts = timestamp_pb2.Timestamp()
            ts.GetCurrentTime()
            env = event_pb2.Envelope(
                timestamp=ts,
                namespace="shimns",
                topic="/tasks/exit",
                event=typeurl.pack(task_pb2.TaskExit(container_id="c", pid=7, exit_status=3)),
            )
            await events.call("Forward", ttrpc_events_pb2.ForwardRequest(envelope=env))
            got = await asyncio.wait_for(anext(sub), 5)
            assert unpack_event(got.event) == task_pb2.TaskExit(
                container_id="c", pid=7, exit_status=3
            )

            with pytest.raises(InvalidArgumentError, match="timestamp must be set"):
                await events.call(
                    "Forward",
                    ttrpc_events_pb2.ForwardRequest(
                        envelope=event_pb2.Envelope(namespace="shimns", topic="/tasks/exit")
                    ),
                )


async def test_plugin_registrations(tmp_path: object) -> None:
    regs = {r.uri: r for r in events_plugin.pycontainerd_plugins()}
    assert set(regs) == {"io.containerd.event.v1.exchange", "io.containerd.grpc.v1.events"}
    assert regs["io.containerd.grpc.v1.events"].requires == (PluginType.EVENT,)

    from pathlib import Path

    from pycontainerd.core.plugin import InitContext

    ic = InitContext(
        root=Path("/nonexistent"), state=Path("/nonexistent"), config={"queue_size": 5}
    )
    exchange = await regs["io.containerd.event.v1.exchange"].init(ic)
    assert isinstance(exchange, Exchange)
    ic2 = InitContext(
        root=Path("/nonexistent"),
        state=Path("/nonexistent"),
        config={},
        initialized={PluginType.EVENT: {"exchange": exchange}},
    )
    service = await regs["io.containerd.grpc.v1.events"].init(ic2)
    assert isinstance(service, EventsService)
