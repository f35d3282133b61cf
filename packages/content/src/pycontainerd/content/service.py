"""The Content gRPC service (``containerd.services.content.v1.Content``).

A thin translator over a content ``Store`` (in the daemon: the metadata
package's namespaced store wrapped by ``EventStore``). The namespace and lease
of each call come from the ``containerd-namespace`` and ``containerd-lease``
headers and are made current with :mod:`pycontainerd.api.grpcutil` (in the
streams, only around steps that do not yield); the store decides whether it
needs a namespace (``namespace is required: failed precondition``). The lease
matters for writes: a blob committed (or an ingest opened) under it is
referenced by it, so a collection during a pull does not take it.

Errors are upstream's: errdefs kinds raised by the store go through
``aborting_on_error`` (message ending in the sentinel); the checks upstream
makes with a literal gRPC status (``"<d>" failed validation``,
``first message must have a reference``, ``write @N must occur at current
offset M``, ``read past object length N bytes``, ``blob with expected digest
D exists``) are answered the same way, without a sentinel.

Memory stays bounded: Read sends at most 1 MiB per message and Write appends
each message's data as it arrives.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Final

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from pycontainerd.api.convert import set_timestamp
from pycontainerd.api.errgrpc import aborting_on_error, unary_rpc
from pycontainerd.api.grpcutil import (
    CallScope,
    last_message_with_status,
    metadata_value,
    request_scope,
)
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.core import digests, namespaces
from pycontainerd.core.content import FastReader, Info, Status, info_leased
from pycontainerd.core.errdefs import ContainerdError
from pycontainerd.core.types import UNSET_TIME

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from datetime import datetime

    from pycontainerd.core.content import ReaderAt, Store, Writer

log = logging.getLogger(__name__)

#: Infos per List message (upstream's batch size).
LIST_BATCH: Final = 100
#: Largest data chunk of one Read message.
READ_CHUNK: Final = 1 << 20

_Ctx = grpc.aio.ServicerContext[Any, Any]


def _ts(when: datetime) -> timestamp_pb2.Timestamp | None:
    if when == UNSET_TIME:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)
    return ts


def info_to_proto(info: Info, *, with_updated: bool = True) -> content_pb2.Info:
    """Domain -> wire (``infoToGRPC``); List leaves ``updated_at`` out, as upstream.

    Fields are set in place (a hot path: ``ctr images ls`` asks for three Infos
    per image); unset times stay off the wire.
    """
    out = content_pb2.Info(digest=info.digest, size=info.size)
    if info.created_at != UNSET_TIME:
        set_timestamp(out.created_at, info.created_at)
    if with_updated and info.updated_at != UNSET_TIME:
        set_timestamp(out.updated_at, info.updated_at)
    labels = out.labels
    for key, value in info.labels.items():
        labels[key] = value
    return out


def info_from_proto(pb: content_pb2.Info) -> Info:
    """Wire -> domain (``infoFromGRPC``)."""
    return Info(
        digest=pb.digest,
        size=pb.size,
        created_at=pb.created_at.ToDatetime(tzinfo=UNSET_TIME.tzinfo)
        if pb.HasField("created_at")
        else UNSET_TIME,
        updated_at=pb.updated_at.ToDatetime(tzinfo=UNSET_TIME.tzinfo)
        if pb.HasField("updated_at")
        else UNSET_TIME,
        labels=dict(pb.labels),
    )


def status_to_proto(status: Status) -> content_pb2.Status:
    """Domain -> wire."""
    return content_pb2.Status(
        started_at=_ts(status.started_at),
        updated_at=_ts(status.updated_at),
        ref=status.ref,
        offset=status.offset,
        total=status.total,
        expected=status.expected,
    )


def _quote(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


async def _check_digest(context: _Ctx, dgst: str) -> None:
    if not digests.is_valid(dgst):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{_quote(dgst)} failed validation")


def _namespace_header(metadata: tuple[tuple[str, str | bytes], ...]) -> str | None:
    return metadata_value(metadata, namespaces.GRPC_HEADER)


class ContentService(content_pb2_grpc.ContentServicer):
    """Serves ``containerd.services.content.v1.Content`` from a content ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._fast = store if isinstance(store, FastReader) else None

    def register(self, server: grpc.aio.Server) -> None:
        """Add the service to ``server``; on the daemon's own server, with fast paths.

        :mod:`pycontainerd.api.h2grpc` answers ``Read`` of a small cached range
        and ``Info`` on the event loop (:meth:`read_now`, :meth:`info_now`);
        what they decline goes to the servicer methods, as everything does on
        grpcio's server.
        """
        from pycontainerd.api import h2grpc

        content_pb2_grpc.add_ContentServicer_to_server(self, server)
        if isinstance(server, h2grpc.Server):
            service = content_pb2.DESCRIPTOR.services_by_name["Content"].full_name
            server.add_fast_path(f"/{service}/Read", self.read_now)
            server.add_fast_path(f"/{service}/Info", self.info_now)

    @unary_rpc
    async def Info(  # noqa: N802 - names fixed by the proto
        self, request: content_pb2.InfoRequest, context: _Ctx
    ) -> content_pb2.InfoResponse:
        await _check_digest(context, request.digest)
        info = await self._store.info(request.digest)
        return content_pb2.InfoResponse(info=info_to_proto(info))

    @unary_rpc
    async def Update(  # noqa: N802
        self, request: content_pb2.UpdateRequest, context: _Ctx
    ) -> content_pb2.UpdateResponse:
        await _check_digest(context, request.info.digest)
        info = await self._store.update(info_from_proto(request.info), *request.update_mask.paths)
        return content_pb2.UpdateResponse(info=info_to_proto(info))

    async def List(  # noqa: N802
        self, request: content_pb2.ListContentRequest, context: _Ctx
    ) -> AsyncIterator[content_pb2.ListContentResponse]:
        async with aborting_on_error(context):
            with request_scope(context):
                walk = self._store.walk(*request.filters)  # may check the filters at once
            batch: list[content_pb2.Info] = []
            async for info in CallScope.of(context).iterate(walk):
                batch.append(info_to_proto(info, with_updated=False))
                if len(batch) >= LIST_BATCH:
                    yield content_pb2.ListContentResponse(info=batch)
                    batch = []
            if batch:
                yield content_pb2.ListContentResponse(info=batch)

    @unary_rpc
    async def Delete(  # noqa: N802
        self, request: content_pb2.DeleteContentRequest, context: _Ctx
    ) -> empty_pb2.Empty:
        await _check_digest(context, request.digest)
        await self._store.delete(request.digest)
        return empty_pb2.Empty()

    async def _open_range(
        self, request: content_pb2.ReadContentRequest, context: _Ctx
    ) -> tuple[ReaderAt, int, int]:
        """The reader and the ``[offset, end)`` a Read asks for (aborts on a bad request)."""
        await _check_digest(context, request.digest)
        async with aborting_on_error(context):
            with request_scope(context):
                # the reader checks visibility as ``info`` does; its size is the blob's
                reader = await self._store.reader_at(request.digest)
        blob_size = reader.size
        offset = max(request.offset, 0)
        if offset > blob_size:
            await reader.close()
            await context.abort(
                grpc.StatusCode.OUT_OF_RANGE, f"read past object length {blob_size} bytes"
            )
        size = request.size
        if size <= 0 or offset + size > blob_size:
            size = blob_size - offset
        return reader, offset, offset + size

    @last_message_with_status
    async def Read(  # noqa: N802
        self, request: content_pb2.ReadContentRequest, context: _Ctx
    ) -> AsyncIterator[content_pb2.ReadContentResponse]:
        """The range in messages of at most ``READ_CHUNK`` bytes.

        Its last message may leave with the status (the marker): ``ctr content
        get`` reads in 32 KiB calls, one message each, and the daemon's server
        then answers each call in one write. An empty range (``offset`` at the
        end of the blob, or an empty blob) answers no message, as upstream.
        """
        reader, offset, end = await self._open_range(request, context)
        try:
            async with aborting_on_error(context):
                while offset < end:
                    data = await reader.read_at(offset, min(READ_CHUNK, end - offset))
                    if not data:
                        break
                    yield content_pb2.ReadContentResponse(offset=offset, data=data)
                    offset += len(data)
        finally:
            await reader.close()

    def info_now(self, raw: bytes, metadata: tuple[tuple[str, str | bytes], ...]) -> bytes | None:
        """``Info`` answered on the event loop (h2grpc's fast path); None: the normal path."""
        fast = self._fast
        ns = _namespace_header(metadata)
        if fast is None or ns is None:
            return None
        request = content_pb2.InfoRequest.FromString(raw)
        if not digests.is_valid(request.digest):
            return None
        info = fast.info_now(ns, request.digest)
        if info is None:
            return None
        return content_pb2.InfoResponse(info=info_to_proto(info)).SerializeToString()

    def read_now(self, raw: bytes, metadata: tuple[tuple[str, str | bytes], ...]) -> bytes | None:
        """``Read`` of a small range answered on the event loop (h2grpc's fast path).

        ``ctr content get`` and image listings read blobs in calls of 32 KiB
        or less; a blob the namespace sees, on a memory file system or in the
        page cache, is answered before any task or handler exists. Anything
        else (a bigger range, bytes on disk, any error) answers None and the
        call goes to :meth:`Read`, which also reports the errors.
        """
        fast = self._fast
        if fast is None:
            return None
        ns = _namespace_header(metadata)
        if ns is None:
            return None
        request = content_pb2.ReadContentRequest.FromString(raw)
        if request.size > READ_CHUNK:
            return None
        got = fast.read_now(ns, request.digest, request.offset, request.size)
        if got is None:
            return None
        _, data = got
        return content_pb2.ReadContentResponse(offset=request.offset, data=data).SerializeToString()

    @unary_rpc
    async def Status(  # noqa: N802
        self, request: content_pb2.StatusRequest, context: _Ctx
    ) -> content_pb2.StatusResponse:
        try:
            status = await self._store.status(request.ref)
        except ContainerdError as exc:
            msg = f"could not get status for ref {_quote(request.ref)}: {exc.message}"
            raise type(exc)(msg) from exc
        return content_pb2.StatusResponse(status=status_to_proto(status))

    @unary_rpc
    async def ListStatuses(  # noqa: N802
        self, request: content_pb2.ListStatusesRequest, context: _Ctx
    ) -> content_pb2.ListStatusesResponse:
        statuses = await self._store.list_statuses(*request.filters)
        return content_pb2.ListStatusesResponse(statuses=[status_to_proto(s) for s in statuses])

    @unary_rpc
    async def Abort(  # noqa: N802
        self, request: content_pb2.AbortRequest, context: _Ctx
    ) -> empty_pb2.Empty:
        await self._store.abort(request.ref)
        return empty_pb2.Empty()

    async def Write(  # noqa: N802
        self,
        request_iterator: AsyncIterator[content_pb2.WriteContentRequest],
        context: _Ctx,
    ) -> AsyncIterator[content_pb2.WriteContentResponse]:
        """The STAT/WRITE/COMMIT protocol over one locked ingest.

        The first message names the ref; the writer is opened (and locked)
        with its total and expected digest. Each message is answered with the
        ingest's state after it. COMMIT validates and ends the stream. If the
        client goes away, the writer is closed and the ingest stays resumable.
        """
        first = await anext(aiter(request_iterator), None)
        if first is None:
            return
        if not first.ref:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "first message must have a reference"
            )
        ref, total, expected = first.ref, first.total, first.expected
        scope = CallScope.of(context)  # current around each step, never across a yield
        with scope.current():
            async with aborting_on_error(context):
                writer = await self._store.writer(ref, total=total, expected=expected)
        try:
            req: content_pb2.WriteContentRequest | None = first
            while req is not None:
                with scope.current():
                    resp, committed = await self._write_step(context, writer, req, total, expected)
                yield resp
                if committed:
                    return
                req = await anext(request_iterator, None)
                if req is None:
                    return
                if req.total > 0:
                    total = req.total  # the latest non-zero total wins
                if req.expected:
                    with scope.current():
                        await self._check_late_expected(context, writer, ref, req.expected)
                    expected = req.expected
        finally:
            with scope.current():
                await writer.close()

    async def _check_late_expected(
        self, context: _Ctx, writer: Writer, ref: str, expected: str
    ) -> None:
        """An expected digest that arrives late and is already present ends the ingest.

        Upstream checks with ``Info`` alone. Here a store with leases also adds
        the blob to the call's lease (``info_leased``), as its writer does when
        the digest comes first: the client skips the blob on AlreadyExists and
        relies on it, and a blob nothing else references (left by an earlier
        import, say) would otherwise be collectable until the client's labels
        or image name it.
        """
        async with aborting_on_error(context):
            try:
                await info_leased(self._store, expected)
            except ContainerdError:
                return
            await writer.close()
            await self._store.abort(ref)
        await context.abort(
            grpc.StatusCode.ALREADY_EXISTS, f"blob with expected digest {expected} exists"
        )

    async def _write_step(
        self,
        context: _Ctx,
        writer: Writer,
        req: content_pb2.WriteContentRequest,
        total: int,
        expected: str,
    ) -> tuple[content_pb2.WriteContentResponse, bool]:
        async with aborting_on_error(context):
            status = await writer.status()
        offset = status.offset
        if req.action in (content_pb2.WRITE, content_pb2.COMMIT):
            if req.offset > 0 and req.offset != offset:
                await context.abort(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"write @{req.offset} must occur at current offset {offset}",
                )
            if req.offset == 0 and offset > 0:
                async with aborting_on_error(context):
                    await writer.truncate(0)
                offset = 0
        if req.data:
            async with aborting_on_error(context):
                n = await writer.write(req.data)
            if n != len(req.data):
                await context.abort(
                    grpc.StatusCode.DATA_LOSS, f"wrote {n} of {len(req.data)} bytes"
                )
            offset += n
        committed = False
        if req.action == content_pb2.COMMIT:
            async with aborting_on_error(context):
                await writer.commit(total, expected, labels=dict(req.labels) or None)
            committed = True
        resp = content_pb2.WriteContentResponse(
            action=req.action,
            started_at=_ts(status.started_at),
            updated_at=_ts(status.updated_at),
            offset=offset,
            total=total,
            digest=writer.digest(),
        )
        return resp, committed
