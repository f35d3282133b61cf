"""The byte-stream credit scheme of ``pycontainerd.api.streams`` over an in-memory stream pair."""

from __future__ import annotations

import asyncio
import os
import re
from typing import TYPE_CHECKING

import pytest

from pycontainerd.api import streams, typeurl
from pycontainerd.api.streams import (
    MAX_READ,
    WINDOW_SIZE,
    Receiver,
    Sender,
    StreamClosedError,
    generate_id,
)
from pycontainerd.api.types.transfer import streaming_pb2

if TYPE_CHECKING:
    from google.protobuf import any_pb2


class End:
    """One end of a pair: what it sends, the other end receives; close ends the other's recv."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[any_pb2.Any | None] = asyncio.Queue()
        self.peer: End | None = None
        self.sent: list[any_pb2.Any] = []
        self.sent_one = asyncio.Event()
        self.closed = False

    async def send(self, msg: any_pb2.Any) -> None:
        assert self.peer is not None
        if self.closed:
            raise StreamClosedError("closed")
        self.sent.append(msg)
        self.sent_one.set()
        await self.peer.inbox.put(msg)

    async def recv(self) -> any_pb2.Any:
        msg = await self.inbox.get()
        if msg is None:
            raise StreamClosedError("closed by peer")
        return msg

    def ended(self) -> bool:
        """Whether this end is closed (a call, so that a later check is not narrowed away)."""
        return self.closed

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            assert self.peer is not None
            await self.peer.inbox.put(None)


def pair() -> tuple[End, End]:
    a, b = End(), End()
    a.peer, b.peer = b, a
    return a, b


async def test_sender_stays_within_the_granted_window() -> None:
    send_end, recv_end = pair()
    data = os.urandom(5 * WINDOW_SIZE + 123)
    sender = Sender(send_end)
    receiver = Receiver(recv_end)

    async def produce() -> None:
        await sender.write(data)
        await sender.close()

    task = asyncio.create_task(produce())
    got = await receiver.read()
    await recv_end.close()
    await task
    assert got == data
    # every Data message is at most 32 KiB, and the bytes in flight never exceed the credit
    granted, outstanding = 0, 0
    for msg in send_end.sent:
        chunk = typeurl.unpack_as(msg, streaming_pb2.Data).data
        assert 0 < len(chunk) <= MAX_READ
        outstanding += len(chunk)
    for msg in recv_end.sent:
        granted += typeurl.unpack_as(msg, streaming_pb2.WindowUpdate).update
    assert outstanding == len(data) <= granted
    assert all(m.type_url == "containerd.types.transfer.Data" for m in send_end.sent)
    assert all(m.type_url == "containerd.types.transfer.WindowUpdate" for m in recv_end.sent)


async def test_sender_without_credit_waits() -> None:
    send_end, _recv_end = pair()
    sender = Sender(send_end)
    write = asyncio.create_task(sender.write(b"x" * 10))
    done, _ = await asyncio.wait([write], timeout=0.2)
    assert not done  # nothing granted yet: nothing sent
    assert send_end.sent == []
    await send_end.inbox.put(typeurl.pack(streaming_pb2.WindowUpdate(update=4)))
    await send_end.sent_one.wait()
    assert [len(typeurl.unpack_as(m, streaming_pb2.Data).data) for m in send_end.sent] == [4]
    assert not write.done()  # 6 bytes left and no credit for them
    await send_end.inbox.put(typeurl.pack(streaming_pb2.WindowUpdate(update=6)))
    await write
    sizes = [len(typeurl.unpack_as(m, streaming_pb2.Data).data) for m in send_end.sent]
    assert sizes == [4, 6]


async def test_receiver_closed_sender_raises() -> None:
    send_end, _recv_end = pair()
    sender = Sender(send_end)
    await send_end.inbox.put(None)  # the receiver went away without granting anything
    try:
        await sender.write(b"data")
    except StreamClosedError:
        pass
    else:
        raise AssertionError("write should fail when the receiver closed")


async def test_sender_ends_only_once_the_receiver_will_not_grant_again() -> None:
    """A short stream: the end waits for the grant the receiver sends after its first read.

    Ending first would race that grant, and over grpc.aio a grant that loses
    the race costs the client every message it has not read yet.
    """
    send_end, recv_end = pair()
    sender = Sender(send_end)
    receiver = Receiver(recv_end)
    first = asyncio.create_task(receiver.chunk())  # grants a window, then reads
    await sender.write(b"x" * 100)
    assert await first == b"x" * 100
    assert len(recv_end.sent) == 1
    closing = asyncio.create_task(sender.close())
    done, _ = await asyncio.wait([closing], timeout=0.2)
    assert not done
    assert not send_end.ended()  # the receiver's window is below a whole one: it will grant
    assert await receiver.chunk() == b""  # grants again, then sees the end
    assert len(recv_end.sent) == 2
    assert send_end.ended()
    await recv_end.close()
    await closing


async def test_sender_ends_at_once_when_the_receiver_holds_a_whole_window() -> None:
    send_end, recv_end = pair()
    sender = Sender(send_end)
    sender.start()
    await send_end.inbox.put(typeurl.pack(streaming_pb2.WindowUpdate(update=2 * WINDOW_SIZE)))
    await sender.write(b"y" * 10)
    closing = asyncio.create_task(sender.close())
    assert await recv_end.recv() == typeurl.pack(streaming_pb2.Data(data=b"y" * 10))
    with pytest.raises(StreamClosedError):
        await recv_end.recv()
    assert send_end.closed
    await recv_end.close()
    await closing


async def test_sender_ends_after_close_wait_when_the_receiver_stops_granting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(streams, "CLOSE_WAIT", 0.1)
    send_end, recv_end = pair()
    sender = Sender(send_end)
    sender.start()
    await send_end.inbox.put(typeurl.pack(streaming_pb2.WindowUpdate(update=16)))
    await sender.write(b"z" * 16)
    await sender.close()  # no further grant: the end goes out after CLOSE_WAIT, twice
    assert send_end.closed
    assert (await recv_end.recv()).type_url == "containerd.types.transfer.Data"
    with pytest.raises(StreamClosedError):
        await recv_end.recv()


async def test_receiver_read_sizes() -> None:
    send_end, recv_end = pair()
    receiver = Receiver(recv_end)
    await recv_end.inbox.put(typeurl.pack(streaming_pb2.Data(data=b"abcdef")))
    await recv_end.inbox.put(None)
    assert await receiver.read(4) == b"abcd"
    assert await receiver.read(4) == b"ef"
    assert await receiver.read(4) == b""
    assert send_end.inbox.qsize() >= 1  # the receiver granted credit first


def test_generate_id_shape() -> None:
    assert re.fullmatch(r"progress-\d{1,9}-[A-Za-z0-9_-]{4}", generate_id("progress"))
    assert generate_id("x") != generate_id("x")
