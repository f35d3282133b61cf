"""The client's byte streams against a daemon that ends the call right after its last message.

containerd ends an export's stream that way. A grant the client sends
after the end has arrived must not cost it the messages it has not read yet.
"""

from __future__ import annotations

import asyncio
import io
import os
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from google.protobuf import any_pb2, empty_pb2

from pycontainerd.api import h2grpc, typeurl
from pycontainerd.api.services.streaming.v1 import streaming_pb2_grpc
from pycontainerd.api.streams import MAX_READ
from pycontainerd.api.types.transfer import streaming_pb2
from pycontainerd.client.client import Client
from pycontainerd.client.transfer import _ClientStream, _receive_file
from pycontainerd.daemon.testing import short_tempdir

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

DATA = os.urandom(5 * MAX_READ + 100)


class EndsAtOnce(streaming_pb2_grpc.StreamingServicer):
    """Acknowledges the stream, sends ``DATA`` on the first grant and returns."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    async def Stream(  # noqa: N802
        self, request_iterator: AsyncIterator[any_pb2.Any], context: object
    ) -> AsyncIterator[any_pb2.Any]:
        incoming = aiter(request_iterator)
        await anext(incoming)  # StreamInit
        yield typeurl.pack(empty_pb2.Empty())
        await anext(incoming)  # the first WindowUpdate: 64 KiB, less than DATA
        for off in range(0, len(DATA), MAX_READ):
            yield typeurl.pack(streaming_pb2.Data(data=DATA[off : off + MAX_READ]))
        self.ended.set()


class SlowFile(io.BytesIO):
    """A file that waits, at its first write, until the daemon has ended the call."""

    def __init__(self, ended: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._ended = ended
        self._loop = loop

    def write(self, data: Any) -> int:
        if not self.tell():
            asyncio.run_coroutine_threadsafe(self._ended.wait(), self._loop).result()
        return super().write(data)


@pytest.mark.parametrize("server_kind", ["grpcio", "h2grpc"])
async def test_an_export_stream_ended_at_once_arrives_whole(server_kind: str) -> None:
    servicer = EndsAtOnce()
    with short_tempdir("pts") as tmp:
        path = f"{tmp}/s.sock"
        server: Any
        if server_kind == "grpcio":
            server = grpc.aio.server()
            streaming_pb2_grpc.add_StreamingServicer_to_server(servicer, server)
            server.add_insecure_port(f"unix://{path}")
            await server.start()
        else:
            server = h2grpc.Server()
            streaming_pb2_grpc.add_StreamingServicer_to_server(servicer, server)
            await server.listen_unix(path)
        try:
            async with Client(path, "default") as client:
                stream = await _ClientStream.open(client, "export-1")
                out = SlowFile(servicer.ended, asyncio.get_running_loop())
                await asyncio.wait_for(_receive_file(stream, out), 30)
                stream.cancel()
        finally:
            await server.stop(None)
    assert out.getvalue() == DATA
