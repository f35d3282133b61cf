"""``containerd publish`` forwards an event over ttrpc into the daemon's exchange."""

from __future__ import annotations

import asyncio
import subprocess
from typing import TYPE_CHECKING

import grpc.aio
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.events import container_pb2
from pycontainerd.api.services.events.v1 import events_pb2, events_pb2_grpc
from pycontainerd.api.types import event_pb2
from pycontainerd.daemon.testing import containerd_cmd

if TYPE_CHECKING:
    from pycontainerd.daemon.testing import MakeDaemon

pytestmark = pytest.mark.system


def publish(
    env: dict[str, str], address: str, payload: bytes, *args: str
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        containerd_cmd("--address", address, "publish", *args),
        input=payload,
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


async def test_publish_reaches_subscribers(make_daemon: MakeDaemon) -> None:
    pytest.importorskip("pycontainerd.events.plugin")
    d = make_daemon(
        env={"PYCONTAINERD_EXTRA_PLUGINS": "pycontainerd.daemon.plugin,pycontainerd.events.plugin"}
    )
    d.start()
    event = any_pb2.Any()
    event.Pack(container_pb2.ContainerCreate(id="c1", image="img"), type_url_prefix="")
    event.type_url = "containerd.events.ContainerCreate"
    payload = event.SerializeToString()

    async with grpc.aio.insecure_channel(f"unix:{d.address}") as channel:
        stream = events_pb2_grpc.EventsStub(channel).Subscribe(
            events_pb2.SubscribeRequest(filters=['topic=="/containers/create"'])
        )
        received = asyncio.ensure_future(stream.read())
        deadline = asyncio.get_running_loop().time() + 20
        while not received.done():
            res = await asyncio.to_thread(
                publish,
                d.env,
                d.address + ".ttrpc",
                payload,
                "--topic",
                "/containers/create",
                "--namespace",
                "default",
            )
            assert res.returncode == 0, res.stderr
            await asyncio.wait({received}, timeout=1.0)
            assert asyncio.get_running_loop().time() < deadline, "event never arrived"
        envelope = received.result()
        assert isinstance(envelope, event_pb2.Envelope)
        stream.cancel()
    assert envelope.namespace == "default"
    assert envelope.topic == "/containers/create"
    assert envelope.event.type_url == "containerd.events.ContainerCreate"
    got = container_pb2.ContainerCreate()
    got.ParseFromString(envelope.event.value)
    assert got.id == "c1"


def test_publish_argument_errors(make_daemon: MakeDaemon, env: dict[str, str]) -> None:
    res = publish(env, "/nonexistent.sock.ttrpc", b"", "--namespace", "default")
    assert res.returncode == 1
    assert res.stderr.decode() == "containerd: topic required to publish event: invalid argument\n"
    res = publish(env, "/nonexistent.sock.ttrpc", b"", "--topic", "/x", "--namespace", "default")
    assert res.returncode == 1
    assert "cannot connect" in res.stderr.decode()
    res = publish(
        env, "/nonexistent.sock.ttrpc", b"\xff\xff", "--topic", "/x", "--namespace", "default"
    )
    assert res.returncode == 1
    assert "failed to unmarshal event payload" in res.stderr.decode()
