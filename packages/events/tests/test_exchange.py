"""The exchange: validation, filters, namespaces and the bounded-queue overflow policy."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from pycontainerd.api import typeurl
from pycontainerd.api.events import container_pb2, content_pb2, task_pb2
from pycontainerd.core.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    ResourceExhaustedError,
)
from pycontainerd.core.events import Forwarder, Publisher, Subscriber
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.core.types import AnyValue
from pycontainerd.events.exchange import (
    Envelope,
    Exchange,
    Subscription,
    pack_event,
    unpack_event,
)


async def drain(sub: Subscription, n: int) -> list[Envelope]:
    async with asyncio.timeout(5):
        return [await anext(sub) for _ in range(n)]


def pending(sub: Subscription) -> int:
    return sub._queue.qsize()


async def test_publish_reaches_subscriber_with_envelope() -> None:
    exchange = Exchange()
    sub = exchange.subscribe()
    before = datetime.now(UTC)
    with with_namespace("ns1"):
        await exchange.publish("/content/delete", content_pb2.ContentDelete(digest="sha256:ab"))
    (env,) = await drain(sub, 1)
    assert env.namespace == "ns1"
    assert env.topic == "/content/delete"
    assert before <= env.timestamp <= datetime.now(UTC)
    assert env.event.type_url == "containerd.events.ContentDelete"
    assert unpack_event(env.event) == content_pb2.ContentDelete(digest="sha256:ab")


async def test_publish_without_namespace_fails() -> None:
    exchange = Exchange()
    with pytest.raises(
        FailedPreconditionError,
        match=r"^failed publishing event: namespace is required: failed precondition$",
    ):
        await exchange.publish("/content/delete", content_pb2.ContentDelete())


async def test_publish_with_invalid_namespace_fails() -> None:
    exchange = Exchange()
    with with_namespace("bad ns"), pytest.raises(InvalidArgumentError, match="namespace"):
        await exchange.publish("/x", content_pb2.ContentDelete())


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("", "must not be empty"),
        ("content/delete", "must start with '/'"),
        ("/", "must have at least one component"),
        ("/content//delete", 'failed validation on component "": identifier must not be empty'),
        ("/content/bad topic", 'failed validation on component "bad topic"'),
    ],
)
async def test_topic_validation(topic: str, reason: str) -> None:
    exchange = Exchange()
    sub = exchange.subscribe()
    with with_namespace("default"), pytest.raises(InvalidArgumentError) as excinfo:
        await exchange.publish(topic, content_pb2.ContentDelete())
    text = str(excinfo.value)
    assert text.startswith(f'envelope topic "{topic}": {reason}')
    assert text.endswith(": invalid argument")
    assert pending(sub) == 0


def _envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "timestamp": datetime.now(UTC),
        "namespace": "default",
        "topic": "/tasks/exit",
        "event": pack_event(task_pb2.TaskExit(container_id="c1", id="c1", pid=42)),
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


async def test_forward_passes_envelope_unchanged() -> None:
    exchange = Exchange()
    sub = exchange.subscribe()
    env = _envelope(timestamp=datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC), namespace="other")
    await exchange.forward(env)
    assert await drain(sub, 1) == [env]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"namespace": ""}, "event envelope has invalid namespace: identifier must not be empty"),
        ({"namespace": "bad_ns!"}, 'event envelope has invalid namespace: identifier "bad_ns!"'),
        ({"topic": "tasks"}, "envelope topic \"tasks\": must start with '/'"),
        (
            {"timestamp": datetime.fromtimestamp(0, UTC)},
            "timestamp must be set on forwarded event: invalid argument",
        ),
    ],
)
async def test_forward_validation(changes: dict[str, object], message: str) -> None:
    exchange = Exchange()
    with pytest.raises(InvalidArgumentError, match="^" + message.replace("(", r"\(")):
        await exchange.forward(_envelope(**changes))


async def test_filters_on_topic_namespace_and_event_fields() -> None:
    exchange = Exchange()
    by_topic = exchange.subscribe('topic~="/containers/"')
    by_ns = exchange.subscribe("namespace==b")
    by_field = exchange.subscribe("event.image==busybox")
    by_nested = exchange.subscribe("event.runtime.name==io.containerd.runc.v2")
    by_label = exchange.subscribe("event.labels.tier==web")
    either = exchange.subscribe('topic=="/content/delete"', "event.id==c2")

    create = container_pb2.ContainerCreate(
        id="c1",
        image="busybox",
        runtime=container_pb2.ContainerCreate.Runtime(name="io.containerd.runc.v2"),
    )
    update = container_pb2.ContainerUpdate(id="c2", labels={"tier": "web"})
    with with_namespace("a"):
        await exchange.publish("/containers/create", create)
    with with_namespace("b"):
        await exchange.publish("/containers/update", update)
        await exchange.publish("/content/delete", content_pb2.ContentDelete(digest="d"))

    assert [e.topic for e in await drain(by_topic, 2)] == [
        "/containers/create",
        "/containers/update",
    ]
    assert [e.topic for e in await drain(by_ns, 2)] == ["/containers/update", "/content/delete"]
    assert [e.topic for e in await drain(by_field, 1)] == ["/containers/create"]
    assert [e.topic for e in await drain(by_nested, 1)] == ["/containers/create"]
    assert [e.topic for e in await drain(by_label, 1)] == ["/containers/update"]
    assert [e.topic for e in await drain(either, 2)] == ["/containers/update", "/content/delete"]
    for sub in (by_topic, by_ns, by_field, by_nested, by_label, either):
        assert pending(sub) == 0


async def test_non_string_event_fields_are_not_filterable() -> None:
    exchange = Exchange()
    sub = exchange.subscribe("event.pid==42")
    await exchange.forward(_envelope())
    assert pending(sub) == 0


async def test_unknown_payload_type_matches_only_envelope_fields() -> None:
    exchange = Exchange()
    by_event = exchange.subscribe("event.id==x")
    by_topic = exchange.subscribe('topic=="/custom/thing"')
    env = _envelope(topic="/custom/thing", event=AnyValue(type_url="example.com/Unknown"))
    await exchange.forward(env)
    assert pending(by_event) == 0
    assert await drain(by_topic, 1) == [env]


async def test_bad_filter_is_invalid_argument() -> None:
    exchange = Exchange()
    with pytest.raises(InvalidArgumentError, match="parse error"):
        exchange.subscribe("topic=/x")
    assert exchange.subscribers == 0


async def test_close_ends_iteration_and_unsubscribes() -> None:
    exchange = Exchange()
    sub = exchange.subscribe()
    assert exchange.subscribers == 1
    waiter = asyncio.create_task(anext(sub))
    await asyncio.sleep(0)
    sub.close()
    with pytest.raises(StopAsyncIteration):
        await waiter
    assert exchange.subscribers == 0
    await exchange.forward(_envelope())  # no one listening: nothing to do


async def test_slow_subscriber_is_dropped_after_its_queue_fills() -> None:
    exchange = Exchange(queue_size=3)
    slow = exchange.subscribe()
    fast_seen: list[str] = []
    fast = exchange.subscribe()

    for i in range(5):
        await exchange.forward(_envelope(topic=f"/t/e{i}"))
        fast_seen.extend(e.topic for e in await drain(fast, 1))

    assert fast_seen == [f"/t/e{i}" for i in range(5)]
    assert exchange.subscribers == 1, "the slow subscriber is unsubscribed"
    # what was queued before the overflow is still delivered, then the error
    assert [e.topic for e in await drain(slow, 3)] == ["/t/e0", "/t/e1", "/t/e2"]
    with pytest.raises(ResourceExhaustedError, match="dropped after 3 queued events"):
        await anext(slow)
    with pytest.raises(ResourceExhaustedError):
        await anext(slow)


async def test_queue_is_bounded_per_subscriber() -> None:
    exchange = Exchange(queue_size=10)
    sub = exchange.subscribe()
    for _ in range(1000):
        await exchange.forward(_envelope())
    assert pending(sub) <= 11  # ten events and the end marker


async def test_subscriber_that_keeps_up_is_never_dropped() -> None:
    exchange = Exchange(queue_size=2)
    sub = exchange.subscribe()
    for i in range(50):
        await exchange.forward(_envelope(topic=f"/t/n{i}"))
        (env,) = await drain(sub, 1)
        assert env.topic == f"/t/n{i}"
    assert not sub.closed


async def test_aclose_ends_all_subscriptions() -> None:
    exchange = Exchange()
    subs = [exchange.subscribe() for _ in range(3)]
    await exchange.aclose()
    for sub in subs:
        with pytest.raises(StopAsyncIteration):
            await anext(sub)


def test_exchange_implements_the_core_contracts() -> None:
    exchange = Exchange()
    publisher: Publisher = exchange
    forwarder: Forwarder = exchange
    subscriber: Subscriber = exchange
    for proto in (Publisher, Forwarder, Subscriber):
        assert isinstance(exchange, proto)
    assert {id(publisher), id(forwarder), id(subscriber)} == {id(exchange)}


def test_queue_size_must_be_positive() -> None:
    with pytest.raises(InvalidArgumentError):
        Exchange(queue_size=0)


async def test_publish_accepts_any_and_rejects_non_messages() -> None:
    exchange = Exchange()
    sub = exchange.subscribe()
    packed = typeurl.pack(content_pb2.ContentDelete(digest="d"))
    with with_namespace("default"):
        await exchange.publish("/content/delete", packed)
        with pytest.raises(InvalidArgumentError, match="not a protobuf message"):
            await exchange.publish("/content/delete", {"digest": "d"})
    (env,) = await drain(sub, 1)
    assert env.event == AnyValue(type_url=packed.type_url, value=packed.value)
    assert pending(sub) == 0
