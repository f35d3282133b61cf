"""The Streaming and Transfer gRPC services (``io.containerd.grpc.v1.{streaming,transfer}``).

``Streaming.Stream``: the first message is a ``StreamInit`` naming the
stream; it is registered in the caller's namespace and acknowledged with a
``google.protobuf.Empty``; the call then stays open until the daemon closes the
stream (the transfer that used it ended) or the client goes away.

``Transfer.Transfer``: resolves the source and destination (and the progress
stream, when named), runs the local transferrer, and streams its progress
events as ``containerd.types.transfer.Progress`` messages; the progress
stream is closed when the transfer ends, so the client has seen every event
once its stream ends.

This module is an edge: it imports grpc and the generated code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2

from pycontainerd.api import typeurl
from pycontainerd.api.errgrpc import aborting_on_error
from pycontainerd.api.grpcutil import lease_of, namespace_of, request_scope
from pycontainerd.api.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from pycontainerd.api.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from pycontainerd.api.streams import StreamClosedError
from pycontainerd.api.types import descriptor_pb2
from pycontainerd.api.types.transfer import imagestore_pb2, progress_pb2
from pycontainerd.core.errdefs import UnimplementedError
from pycontainerd.transfer.local import (
    ExportStream,
    ImportStream,
    NoTransferError,
    Registry,
    endpoint,
    start_warm_up,
    warmed_up,
)
from pycontainerd.transfer.streams import ManagedStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import grpc
    from google.protobuf import any_pb2

    from pycontainerd.transfer.local import Endpoint, LocalTransferrer
    from pycontainerd.transfer.progress import Event
    from pycontainerd.transfer.streams import StreamManager

__all__ = ["StreamingService", "TransferService"]

log = logging.getLogger(__name__)

_Ctx = Any  # grpc.aio.ServicerContext[request, response]

ENDING_WAIT = 1.0
"""Seconds the Transfer call waits for its progress stream's end to go out."""


class StreamingService(streaming_pb2_grpc.StreamingServicer):
    """Registers client streams with the stream manager."""

    def __init__(self, manager: StreamManager) -> None:
        self._manager = manager

    def register(self, server: grpc.aio.Server) -> None:
        streaming_pb2_grpc.add_StreamingServicer_to_server(self, server)

    async def Stream(  # type: ignore[override]  # noqa: N802  # writes with context.write
        self, request_iterator: AsyncIterator[any_pb2.Any], context: _Ctx
    ) -> None:
        start_warm_up()
        incoming = aiter(request_iterator)
        first = await anext(incoming, None)
        if first is None:
            return
        async with aborting_on_error(context):
            init = typeurl.unpack_as(first, streaming_pb2.StreamInit)
        stream = ManagedStream(incoming, context.write)
        context.add_done_callback(lambda _ctx: stream.mark_ended())
        async with aborting_on_error(context):
            self._manager.add(
                namespace_of(context) or "", init.id, stream, lease=lease_of(context) or ""
            )
        log.debug("registered stream %s", init.id)
        try:
            await context.write(typeurl.pack(empty_pb2.Empty()))
            await stream.wait_closed()
        finally:
            stream.close_now()


def _progress_message(e: Event) -> any_pb2.Any:
    msg = progress_pb2.Progress(
        event=e.event, name=e.name, parents=list(e.parents), progress=e.progress, total=e.total
    )
    if e.digest:
        msg.desc.CopyFrom(
            descriptor_pb2.Descriptor(media_type=e.media_type, digest=e.digest, size=e.total)
        )
    return typeurl.pack(msg)


class _ProgressSender:
    """Queues events from the (synchronous) trackers and sends them in order."""

    def __init__(self, stream: ManagedStream) -> None:
        self._stream = stream
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    def emit(self, e: Event) -> None:
        self._queue.put_nowait(e)

    async def _run(self) -> None:
        while (e := await self._queue.get()) is not None:
            try:
                await self._stream.send(_progress_message(e))
            except StreamClosedError:
                log.debug("progress stream closed; dropping events")
                return

    async def finish(self) -> None:
        """Send what is queued, close the stream and let its end reach the client.

        The Transfer call answers only after the progress stream has ended, so
        a client that stops reading when the call returns (containerd 2.x's
        ``ctr``) has the last events (``Completed pull …``) already.
        """
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stream.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ENDING_WAIT):
                await self._stream.wait_ended()


def _streams_of(ep: Endpoint) -> list[ManagedStream]:
    """The client streams an endpoint uses (closed when the transfer ends)."""
    if isinstance(ep, Registry):
        return [s for s in (ep.auth, ep.logs) if s is not None]
    if isinstance(ep, ImportStream | ExportStream):
        return [ep.stream]
    return []


class TransferService(transfer_pb2_grpc.TransferServicer):
    """Runs transfers with the local transferrer."""

    def __init__(self, transferrer: LocalTransferrer, manager: StreamManager) -> None:
        self._transferrer = transferrer
        self._manager = manager

    def register(self, server: grpc.aio.Server) -> None:
        transfer_pb2_grpc.add_TransferServicer_to_server(self, server)

    async def Transfer(  # noqa: N802
        self, request: transfer_pb2.TransferRequest, context: _Ctx
    ) -> empty_pb2.Empty:
        if typeurl.is_type(request.destination, imagestore_pb2.ImageStore):
            self._transferrer.expect_applies()  # the applier gets ready during the imports
        await warmed_up()
        ns = namespace_of(context) or ""
        sender: _ProgressSender | None = None
        with request_scope(context):
            async with aborting_on_error(context):
                if request.options.progress_stream:
                    stream = self._manager.get(ns, request.options.progress_stream)
                    sender = _ProgressSender(stream)
                streams: list[ManagedStream] = []
                try:
                    src = endpoint(request.source, self._manager, ns, "source")
                    streams += _streams_of(src)
                    dst = endpoint(request.destination, self._manager, ns, "destination")
                    streams += _streams_of(dst)
                    try:
                        await self._transferrer.transfer(
                            src, dst, sender.emit if sender is not None else None
                        )
                    except NoTransferError:
                        src_url, dst_url = request.source.type_url, request.destination.type_url
                        msg = f"method Transfer not implemented for {src_url} to {dst_url}"
                        raise UnimplementedError(msg) from None
                finally:
                    if sender is not None:
                        await sender.finish()
                    for s in streams:
                        s.close_now()
        return empty_pb2.Empty()
