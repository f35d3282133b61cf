"""Byte streams over containerd's Streaming service, both ends (``core/transfer/streaming``).

The Streaming service carries ``google.protobuf.Any`` messages in both
directions of one bidirectional call. The Transfer service moves archives over
such a stream with a credit scheme:

- the **receiver** grants credit with ``containerd.types.transfer.WindowUpdate``
  (64 KiB at a time: it grants again whenever its outstanding credit falls
  below 64 KiB), and reads ``containerd.types.transfer.Data`` messages;
- the **sender** sends ``Data`` messages of at most 32 KiB and never more
  bytes than it has been granted; it ends the stream by closing its side.

The daemon receives an import (upstream's ``ReadByteStream``) and sends an
export (``WriteByteStream``); the client does the opposite (``SendStream``,
``ReceiveStream``). Both use :class:`Receiver` and :class:`Sender` here over
anything that satisfies :class:`Stream`.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Final, Protocol

from pycontainerd.api import typeurl
from pycontainerd.api.types.transfer import streaming_pb2

if TYPE_CHECKING:
    from google.protobuf import any_pb2

__all__ = [
    "MAX_READ",
    "WINDOW_SIZE",
    "Receiver",
    "Sender",
    "Stream",
    "StreamClosedError",
    "generate_id",
]

log = logging.getLogger(__name__)

MAX_READ: Final = 32 * 1024
"""Largest ``Data`` payload a sender puts in one message."""
WINDOW_SIZE: Final = 2 * MAX_READ
"""Credit a receiver grants in one ``WindowUpdate``."""
CLOSE_WAIT: Final = 5.0
"""Seconds a sender waits, after ending its stream, for the receiver to close its side."""


class StreamClosedError(EOFError):
    """The other side closed the stream (or the call ended)."""


class Stream(Protocol):
    """One stream of ``Any`` messages (containerd's ``streaming.Stream``)."""

    async def send(self, msg: any_pb2.Any) -> None:
        """Send one message.

        Raises:
            StreamClosedError: the stream is closed.
        """
        ...

    async def recv(self) -> any_pb2.Any:
        """The next message.

        Raises:
            StreamClosedError: the other side closed its end.
        """
        ...

    async def close(self) -> None:
        """Close this side (the other side's ``recv`` then ends)."""
        ...


def generate_id(prefix: str) -> str:
    """A stream id as upstream makes it: ``<prefix>-<nanoseconds>-<3 random bytes base64url>``."""
    nanos = time.time_ns() % 1_000_000_000
    return f"{prefix}-{nanos}-{base64.urlsafe_b64encode(os.urandom(3)).decode()}"


class Receiver:
    """Reads a byte stream, granting the sender credit as it goes."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._window = 0
        self._pending = b""
        self._eof = False

    async def _grant(self) -> None:
        if self._window < WINDOW_SIZE:
            update = typeurl.pack(streaming_pb2.WindowUpdate(update=WINDOW_SIZE))
            try:
                await self._stream.send(update)
            except StreamClosedError:
                return  # the sender may be done already; its close shows on recv
            self._window += WINDOW_SIZE

    async def chunk(self) -> bytes:
        """The next piece of data (b"" at the end of the stream)."""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        while not self._eof:
            await self._grant()
            try:
                msg = await self._stream.recv()
            except StreamClosedError:
                self._eof = True
                break
            if not typeurl.is_type(msg, streaming_pb2.Data):
                log.warning("ignoring unexpected stream message %s", msg.type_url)
                continue
            data = typeurl.unpack_as(msg, streaming_pb2.Data).data
            self._window -= len(data)
            if data:
                return data
        return b""

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left with ``n < 0``); b"" at the end."""
        if n < 0:
            parts = []
            while chunk := await self.chunk():
                parts.append(chunk)
            return b"".join(parts)
        data = await self.chunk()
        if len(data) > n:
            data, self._pending = data[:n], data[n:]
        return data


class Sender:
    """Writes a byte stream within the credit the receiver grants.

    :meth:`start` runs a task that reads the receiver's ``WindowUpdate``
    messages; :meth:`close` closes the stream (the receiver sees the end).
    """

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._credit = 0
        self._updated = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start reading credit from the receiver."""
        if self._task is None:
            self._task = asyncio.create_task(self._credits())

    async def _credits(self) -> None:
        try:
            while True:
                msg = await self._stream.recv()
                if not typeurl.is_type(msg, streaming_pb2.WindowUpdate):
                    log.warning("ignoring unexpected stream message %s", msg.type_url)
                    continue
                self._credit += typeurl.unpack_as(msg, streaming_pb2.WindowUpdate).update
                self._updated.set()
        except StreamClosedError:
            self._closed = True
            self._updated.set()

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``, waiting for credit as needed.

        Raises:
            StreamClosedError: the receiver went away before all was sent.
        """
        self.start()
        view = memoryview(data)
        while view:
            while self._credit <= 0:
                if self._closed:
                    msg = "stream closed by the receiver"
                    raise StreamClosedError(msg)
                self._updated.clear()
                await self._updated.wait()
            n = min(MAX_READ, self._credit, len(view))
            await self._stream.send(typeurl.pack(streaming_pb2.Data(data=bytes(view[:n]))))
            self._credit -= n
            view = view[n:]

    async def close(self) -> None:
        """End the byte stream once the receiver has read it; wait for the receiver to close.

        Before the end goes out, wait (at most ``CLOSE_WAIT`` s) until the
        credit held is a whole window: a receiver grants whenever its own
        window falls below ``WINDOW_SIZE``, so from then on it reads what is
        left without sending another grant. A grant sent after the end would
        race it, and with grpc.aio a write that loses that race fails the call
        on the client, which then drops the messages it had not read yet: the
        receiver would see a short stream and no error.

        After the end, wait (at most ``CLOSE_WAIT`` s again) for the receiver
        to close. The credit reader is not cancelled at once: with grpc.aio,
        cancelling a pending read cancels the whole call, and the receiver
        would see a reset instead of the end of the stream.
        """
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    while self._credit < WINDOW_SIZE and not self._closed:
                        self._updated.clear()
                        await self._updated.wait()
        await self._stream.close()
        if self._task is not None:
            done, _ = await asyncio.wait([self._task], timeout=CLOSE_WAIT)
            if not done:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
