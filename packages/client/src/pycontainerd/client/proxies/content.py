"""``RemoteContentStore``: the content ``Store`` contract over the Content service.

Writers speak containerd's Write stream protocol: the first message (STAT)
names the ref and opens the ingest on the daemon, holding its lock for as
long as the stream lives; WRITE messages append at the current offset; a
WRITE at offset 0 restarts the ingest; COMMIT validates and ends the stream.

WRITE messages are pipelined: the daemon answers every request in order, so
the writer sends up to ``WRITE_WINDOW`` of them before it reads (and checks)
their answers, instead of waiting a round trip per MiB. Every other action
first collects the answers still due. So that ``digest()`` is right while
answers are due, a writer whose ingest started empty hashes what it sends; a
resumed one (whose earlier bytes it never saw) collects all answers at the
end of each ``write``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import TYPE_CHECKING, Any

import grpc

from pycontainerd.api.convert import field_mask, time_from_proto
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.client._convert import (
    content_info_from_proto,
    content_info_to_proto,
    status_from_proto,
)
from pycontainerd.client._errors import rpc_errors
from pycontainerd.client.proxies import Proxy
from pycontainerd.core.closing import finish_shielded
from pycontainerd.core.content import Status
from pycontainerd.core.errdefs import (
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnknownError,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from pycontainerd.client.proxies import Connection
    from pycontainerd.core.content import Info

#: Bytes per WRITE message (containerd's Go client sends 1 MiB too). Larger
#: messages save a little CPU (2 MiB: ~5%) but raise a pull's peak RSS by about
#: 20 MiB: each message's data exists in several copies (the joined buffer, the
#: protobuf message, its serialized form, gRPC's own), all per concurrent blob.
WRITE_CHUNK = 1 << 20
#: WRITE messages in flight before the writer waits for answers.
WRITE_WINDOW = 4


class RemoteContentStore(Proxy["content_pb2_grpc.ContentAsyncStub"]):
    """A content ``Store`` backed by a daemon's Content service."""

    new_stub = content_pb2_grpc.ContentStub

    async def info(self, dgst: str) -> Info:
        resp = await self._call(self._stub.Info, content_pb2.InfoRequest(digest=dgst))
        return content_info_from_proto(resp.info)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        req = content_pb2.UpdateRequest(
            info=content_info_to_proto(info), update_mask=field_mask(fieldpaths)
        )
        resp = await self._call(self._stub.Update, req)
        return content_info_from_proto(resp.info)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        call = self._stub.List(
            content_pb2.ListContentRequest(filters=list(filters)),
            metadata=self._client.metadata(),
        )
        with rpc_errors():
            async for resp in call:
                for info in resp.info:
                    yield content_info_from_proto(info)

    async def delete(self, dgst: str) -> None:
        await self._call(self._stub.Delete, content_pb2.DeleteContentRequest(digest=dgst))

    async def reader_at(self, dgst: str) -> RemoteReaderAt:
        info = await self.info(dgst)
        return RemoteReaderAt(self._client, self._stub, info.digest, info.size)

    async def status(self, ref: str) -> Status:
        resp = await self._call(self._stub.Status, content_pb2.StatusRequest(ref=ref))
        return status_from_proto(resp.status)

    async def list_statuses(self, *filters: str) -> list[Status]:
        resp = await self._call(
            self._stub.ListStatuses, content_pb2.ListStatusesRequest(filters=list(filters))
        )
        return [status_from_proto(s) for s in resp.statuses]

    async def abort(self, ref: str) -> None:
        await self._call(self._stub.Abort, content_pb2.AbortRequest(ref=ref))

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> RemoteWriter:
        if not ref:
            msg = "ref must not be empty"
            raise InvalidArgumentError(msg)
        call = self._stub.Write(metadata=self._client.metadata())
        writer = RemoteWriter(call, ref)
        opening = asyncio.ensure_future(writer.open(total, expected))
        try:
            await finish_shielded(opening)
        except asyncio.CancelledError:
            # The daemon may have opened (and locked) the ingest already, and
            # the caller gets no writer to discard it with: end the stream and
            # remove an ingest this open created before the cancellation goes on.
            await finish_shielded(self._abandon(writer, opening))
            raise
        except BaseException:
            call.cancel()
            raise
        return writer

    async def _abandon(self, writer: RemoteWriter, opening: asyncio.Future[None]) -> None:
        """Undo a ``writer()`` call that was cancelled while it opened the ingest."""
        if opening.cancelled() or opening.exception() is not None:
            writer.cancel()
            return
        await writer.close()
        if writer.started_empty:
            with contextlib.suppress(NotFoundError):
                await self.abort(writer.ref)


class RemoteReaderAt:
    """Random access to one blob through ``Content.Read`` calls."""

    def __init__(
        self, client: Connection, stub: content_pb2_grpc.ContentAsyncStub, dgst: str, size: int
    ) -> None:
        self._client = client
        self._stub = stub
        self.digest = dgst
        self.size = size

    async def read_at(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        size = min(size, self.size - offset)
        return b"".join([chunk async for chunk in self.stream(offset, size)])

    async def stream(self, offset: int = 0, size: int = 0) -> AsyncIterator[bytes]:
        """The blob's bytes from ``offset`` (``size`` 0: to the end), chunk by chunk."""
        call = self._stub.Read(
            content_pb2.ReadContentRequest(digest=self.digest, offset=offset, size=size),
            metadata=self._client.metadata(),
        )
        with rpc_errors():
            async for resp in call:
                yield resp.data

    async def close(self) -> None:
        return None


class RemoteWriter:
    """One open ingest; its Write stream holds the daemon-side lock on the ref."""

    def __init__(self, call: Any, ref: str) -> None:
        self._call = call
        self._ref = ref
        self.ref = ref
        self._offset = 0
        self._digest = ""
        self._total = 0
        self._expected = ""
        self._status: Status | None = None
        self._done = False
        #: offsets the answers to WRITE messages sent but not yet read must report
        self._due: list[int] = []
        #: sha256 of everything written, while the ingest is known to have started empty
        self._hasher: Any = None

    async def _receive(self, *, track_offset: bool = True) -> content_pb2.WriteContentResponse:
        with rpc_errors():
            resp = await self._call.read()
        if not isinstance(resp, content_pb2.WriteContentResponse):
            self._done = True
            msg = f"write stream for ref {self._ref!r} ended unexpectedly"
            raise UnknownError(msg)
        if track_offset:  # an answer to a pipelined WRITE is older than what was sent since
            self._offset = resp.offset
        self._digest = resp.digest
        if resp.total:
            self._total = resp.total
        self._status = Status(
            ref=self._ref,
            offset=resp.offset,
            total=resp.total or self._total,
            expected=self._expected,
            started_at=time_from_proto(resp.started_at),
            updated_at=time_from_proto(resp.updated_at),
        )
        return resp

    async def _collect(self, keep: int = 0) -> None:
        """Read answers to pipelined WRITEs until at most ``keep`` are due; check each offset."""
        while len(self._due) > keep:
            want = self._due.pop(0)
            resp = await self._receive(track_offset=False)
            if resp.offset != want:
                self._done = True
                msg = f"short write to {self._ref}: offset {resp.offset}, expected {want}"
                raise UnknownError(msg)

    def _check_open(self) -> None:
        if self._done:
            msg = f"writer for ref {self._ref!r} is closed"
            raise FailedPreconditionError(msg)

    async def _send(self, req: content_pb2.WriteContentRequest) -> content_pb2.WriteContentResponse:
        self._check_open()
        await self._collect()
        with rpc_errors():
            await self._call.write(req)
        return await self._receive()

    async def open(self, total: int, expected: str) -> None:
        """Send the opening STAT (the daemon opens and locks the ingest)."""
        self._total, self._expected = total, expected
        resp = await self._send(
            content_pb2.WriteContentRequest(
                action=content_pb2.STAT, ref=self._ref, total=total, expected=expected
            )
        )
        self._hasher = hashlib.sha256() if resp.offset == 0 else None

    @property
    def started_empty(self) -> bool:
        """Whether the ingest had no bytes when this writer opened it."""
        return self._hasher is not None

    def cancel(self) -> None:
        """Cut the stream (the daemon releases the ref; the ingest stays)."""
        self._done = True
        self._call.cancel()

    def digest(self) -> str:
        if self._hasher is not None:
            return "sha256:" + str(self._hasher.hexdigest())
        return self._digest

    async def status(self) -> Status:
        await self._send(content_pb2.WriteContentRequest(action=content_pb2.STAT))
        assert self._status is not None  # noqa: S101 - set by _send
        return self._status

    async def write(self, data: bytes) -> int:
        self._check_open()
        view = memoryview(data)
        for start in range(0, len(view), WRITE_CHUNK):
            # a message's data must be bytes; a write that fits one message is sent as is
            if type(data) is bytes and len(data) <= WRITE_CHUNK:
                chunk = data
            else:
                chunk = bytes(view[start : start + WRITE_CHUNK])
            before = self._offset
            with rpc_errors():
                await self._call.write(
                    content_pb2.WriteContentRequest(
                        action=content_pb2.WRITE, offset=before, data=chunk
                    )
                )
            if self._hasher is not None:
                self._hasher.update(chunk)
            # the next WRITE goes at the offset this one will end at
            self._offset = before + len(chunk)
            self._due.append(self._offset)
            await self._collect(keep=WRITE_WINDOW)
        if self._hasher is None:
            await self._collect()
        return len(data)

    async def truncate(self, size: int) -> None:
        if size != 0:
            msg = "truncate: only size 0 is supported"
            raise InvalidArgumentError(msg)
        # A WRITE at offset 0 makes the daemon restart the ingest.
        await self._send(content_pb2.WriteContentRequest(action=content_pb2.WRITE, offset=0))
        self._hasher = hashlib.sha256()

    async def commit(
        self, size: int = 0, expected: str = "", *, labels: Mapping[str, str] | None = None
    ) -> str:
        resp = await self._send(
            content_pb2.WriteContentRequest(
                action=content_pb2.COMMIT,
                offset=self._offset,
                total=size,
                expected=expected,
                labels=dict(labels or {}),
            )
        )
        self._done = True
        await self._finish()
        if size and resp.offset != size:
            msg = f"unexpected commit size {resp.offset}, expected {size}"
            raise FailedPreconditionError(msg)
        if expected and resp.digest != expected:
            msg = f"unexpected commit digest {resp.digest}, expected {expected}"
            raise FailedPreconditionError(msg)
        return resp.digest

    async def _finish(self) -> None:
        """Half-close the stream and wait until the daemon ended it (and released the ref)."""
        if self._call.done():
            # Ended already; a call cut by a cancelled write or read would
            # raise CancelledError from every further operation.
            return
        try:
            await self._call.done_writing()
            # Drain what is left: containerd's Go server sends its last answer
            # twice, and the call's status only arrives once messages are read.
            while await self._call.read() is not grpc.aio.EOF:
                pass
        except Exception:
            self._call.cancel()

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        self._due.clear()
        await self._finish()
