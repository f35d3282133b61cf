"""Server-side image moves through the Transfer service (containerd 2.x's ``Client.Transfer``).

Describe a source and a destination and let the daemon do the work:

```python
from pycontainerd.client.transfer import ImageStore, OCIRegistry, transfer

ref = "127.0.0.1:5000/app:1"
await transfer(client, OCIRegistry(ref, default_scheme="http"),
               ImageStore(ref, unpacks=[(platforms.host(), "")]), progress=print)
```

| source | destination | the daemon |
|---|---|---|
| :class:`OCIRegistry` | :class:`ImageStore` | pulls (fetch, verify, unpack, record) |
| :class:`ImageStore` | :class:`OCIRegistry` | pushes |
| :class:`ImageStore` | :class:`ImageExportStream` | exports an OCI archive into the client's file |
| :class:`ImageImportStream` | :class:`ImageStore` | imports an archive from the client's file |
| :class:`ImageStore` | :class:`ImageStore` | tags |

Side channels go over the Streaming service, one stream each: progress
events (:class:`Progress`), registry credentials (asked by the daemon, answered
by the ``credentials`` callback) and the archive bytes (credit-based, as
:mod:`pycontainerd.api.streams` describes). ``Client.transfer`` is this
function.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

import grpc
from google.protobuf import any_pb2

from pycontainerd.api import typeurl
from pycontainerd.api.services.streaming.v1 import streaming_pb2, streaming_pb2_grpc
from pycontainerd.api.services.transfer.v1 import transfer_pb2, transfer_pb2_grpc
from pycontainerd.api.streams import Receiver, Sender, StreamClosedError, generate_id
from pycontainerd.api.types import platform_pb2
from pycontainerd.api.types.transfer import (
    imagestore_pb2,
    importexport_pb2,
    progress_pb2,
    registry_pb2,
)
from pycontainerd.client._errors import rpc_errors
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.remotes.progress import TransferProgress as Progress

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from google.protobuf import message

    from pycontainerd.client.proxies import Connection
    from pycontainerd.core.platforms import Platform

__all__ = [
    "ImageExportStream",
    "ImageImportStream",
    "ImageReference",
    "ImageStore",
    "OCIRegistry",
    "Progress",
    "transfer",
]


@dataclass(slots=True)
class OCIRegistry:
    """A registry reference.

    Attributes:
        reference: the image reference.
        host_dir: a ``hosts.toml`` root on the daemon's host (``--hosts-dir``).
        default_scheme: ``http`` for a plain-HTTP registry (``--plain-http``).
        headers: headers sent with every request.
        credentials: ``host -> (username, secret)`` or ``None``; may be a
            coroutine function. The daemon asks when a registry wants them.
    """

    reference: str
    host_dir: str = ""
    default_scheme: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    credentials: Callable[[str], Any] | None = None


@dataclass(slots=True)
class ImageReference:
    """An extra name for :class:`ImageStore` (``containerd.types.transfer.ImageReference``)."""

    name: str
    is_prefix: bool = False
    allow_overwrite: bool = False
    add_digest: bool = False
    skip_named_digest: bool = False


@dataclass(slots=True)
class ImageStore:
    """The daemon's image store.

    Attributes:
        name: the image's name.
        labels: labels of the images it records.
        platforms: the platforms to fetch (empty: all).
        all_metadata: fetch every manifest and config, not only the platforms'.
        manifest_limit: at most this many manifests of an index (0: no limit).
        extra_references: further names (or prefixes, for imports).
        unpacks: ``(platform, snapshotter)`` pairs to unpack into ("" = default).
    """

    name: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    platforms: Sequence[Platform] = ()
    all_metadata: bool = False
    manifest_limit: int = 0
    extra_references: Sequence[ImageReference] = ()
    unpacks: Sequence[tuple[Platform, str]] = ()


@dataclass(slots=True)
class ImageImportStream:
    """An archive the client sends (an OCI layout or ``docker save`` tar)."""

    source: IO[bytes]
    media_type: str = ""
    force_compress: bool = False


@dataclass(slots=True)
class ImageExportStream:
    """An OCI archive the daemon writes into ``out``."""

    out: IO[bytes]
    media_type: str = ""
    platforms: Sequence[Platform] = ()
    all_platforms: bool = False
    skip_compatibility_manifest: bool = False
    skip_non_distributable: bool = False


Endpoint = OCIRegistry | ImageStore | ImageImportStream | ImageExportStream | any_pb2.Any
"""What a transfer moves from or to; a raw ``Any`` is sent as it is (another type)."""


def _platform(p: Platform) -> platform_pb2.Platform:
    return platform_pb2.Platform(
        os=p.os, architecture=p.architecture, variant=p.variant, os_version=p.os_version
    )


class _ClientStream:
    """One Streaming call as an :class:`pycontainerd.api.streams.Stream`."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._write_lock = asyncio.Lock()
        self._done_writing = False

    @classmethod
    async def open(cls, client: Connection, name: str) -> _ClientStream:
        stub = streaming_pb2_grpc.StreamingStub(client.channel)
        call = stub.Stream(metadata=client.metadata())
        with rpc_errors():
            await call.write(typeurl.pack(streaming_pb2.StreamInit(id=name)))
            ack = await call.read()  # the daemon acknowledges once the stream is registered
        if ack is grpc.aio.EOF:
            msg = f"stream {name} was closed before it was registered"
            raise StreamClosedError(msg)
        return cls(call)

    async def send(self, msg: any_pb2.Any) -> None:
        async with self._write_lock:
            if self._done_writing:
                raise StreamClosedError("stream closed")
            try:
                await self._write(msg)
            except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                raise StreamClosedError(str(exc)) from None

    async def _write(self, msg: any_pb2.Any) -> None:
        """Write ``msg``; a write that fails leaves the call readable.

        A daemon may end the call right after its last message (containerd's
        export does), while a grant of ours is on its way. grpc.aio's
        ``write`` turns that failed write into an INTERNAL status of the whole
        call, and every later ``read`` raises it: the messages that had
        arrived but were not read yet would be lost, and an export would end
        short without an error. So the message goes to the call's core object,
        whose failure only ends the writing; where that object is not there
        (another grpc version), ``write`` is used.
        """
        core = getattr(self._call, "_cython_call", None)
        send = getattr(core, "send_serialized_message", None)
        if send is None or self._call.done():
            await self._call.write(msg)
            return
        try:
            await send(msg.SerializeToString())
        except asyncio.CancelledError:
            self._call.cancel()
            raise
        except Exception as exc:  # cygrpc.InternalError: the call is over for writes
            self._done_writing = True
            raise StreamClosedError(f"stream closed: {exc}") from None

    async def recv(self) -> any_pb2.Any:
        try:
            msg = await self._call.read()
        except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
            raise StreamClosedError(str(exc)) from None
        if msg is grpc.aio.EOF:
            raise StreamClosedError("stream closed by the daemon")
        result: any_pb2.Any = msg
        return result

    async def close(self) -> None:
        async with self._write_lock:
            if not self._done_writing:
                self._done_writing = True
                with contextlib.suppress(
                    grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError
                ):
                    await self._call.done_writing()

    def cancel(self) -> None:
        self._call.cancel()


class _Session:
    """The streams and background tasks of one transfer."""

    def __init__(self, client: Connection) -> None:
        self.client = client
        self.streams: list[_ClientStream] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.finish: list[asyncio.Task[None]] = []  # awaited after the call succeeds

    async def stream(self, prefix: str) -> tuple[str, _ClientStream]:
        name = generate_id(prefix)
        stream = await _ClientStream.open(self.client, name)
        self.streams.append(stream)
        return name, stream

    def spawn(self, coro: Awaitable[None], *, wait: bool = False) -> None:
        task = asyncio.ensure_future(coro)
        (self.finish if wait else self.tasks).append(task)

    async def close(self, *, ok: bool) -> None:
        if ok and self.finish:
            done, _ = await asyncio.wait(self.finish, timeout=30)
            for task in done:
                task.result()
        for task in (*self.tasks, *self.finish):
            task.cancel()
        for task in (*self.tasks, *self.finish):
            with contextlib.suppress(asyncio.CancelledError, StreamClosedError):
                await task
        for stream in self.streams:
            stream.cancel()

    async def marshal(self, ep: Endpoint) -> any_pb2.Any:
        if isinstance(ep, any_pb2.Any):
            return ep
        return typeurl.pack(await self._message(ep))

    async def _message(self, ep: Endpoint) -> message.Message:
        if isinstance(ep, OCIRegistry):
            resolver = registry_pb2.RegistryResolver(
                headers=dict(ep.headers), host_dir=ep.host_dir, default_scheme=ep.default_scheme
            )
            if ep.credentials is not None:
                resolver.auth_stream, stream = await self.stream("tstream")
                self.spawn(_answer_auth(stream, ep.credentials))
            return registry_pb2.OCIRegistry(reference=ep.reference, resolver=resolver)
        if isinstance(ep, ImageStore):
            return imagestore_pb2.ImageStore(
                name=ep.name,
                labels=dict(ep.labels),
                platforms=[_platform(p) for p in ep.platforms],
                all_metadata=ep.all_metadata,
                manifest_limit=ep.manifest_limit,
                extra_references=[
                    imagestore_pb2.ImageReference(
                        name=r.name,
                        is_prefix=r.is_prefix,
                        allow_overwrite=r.allow_overwrite,
                        add_digest=r.add_digest,
                        skip_named_digest=r.skip_named_digest,
                    )
                    for r in ep.extra_references
                ],
                unpacks=[
                    imagestore_pb2.UnpackConfiguration(platform=_platform(p), snapshotter=s)
                    for p, s in ep.unpacks
                ],
            )
        if isinstance(ep, ImageImportStream):
            name, stream = await self.stream("import")
            self.spawn(_send_file(stream, ep.source))
            return importexport_pb2.ImageImportStream(
                stream=name, media_type=ep.media_type, force_compress=ep.force_compress
            )
        if not isinstance(ep, ImageExportStream):
            msg = f"unsupported transfer endpoint {type(ep).__name__}"
            raise InvalidArgumentError(msg)
        name, stream = await self.stream("export")
        self.spawn(_receive_file(stream, ep.out), wait=True)
        return importexport_pb2.ImageExportStream(
            stream=name,
            media_type=ep.media_type,
            platforms=[_platform(p) for p in ep.platforms],
            all_platforms=ep.all_platforms,
            skip_compatibility_manifest=ep.skip_compatibility_manifest,
            skip_non_distributable=ep.skip_non_distributable,
        )


async def _answer_auth(stream: _ClientStream, credentials: Callable[[str], Any]) -> None:
    with contextlib.suppress(StreamClosedError):
        while True:
            req = typeurl.unpack_as(await stream.recv(), registry_pb2.AuthRequest)
            found = credentials(req.host)
            if inspect.isawaitable(found):
                found = await found
            if found is None:
                resp = registry_pb2.AuthResponse(authType=registry_pb2.NONE)
            else:
                user, secret = found
                resp = registry_pb2.AuthResponse(
                    authType=registry_pb2.CREDENTIALS, username=user, secret=secret
                )
            await stream.send(typeurl.pack(resp))


async def _send_file(stream: _ClientStream, source: IO[bytes]) -> None:
    sender = Sender(stream)
    sender.start()
    try:
        while chunk := await asyncio.to_thread(source.read, 1 << 20):
            await sender.write(chunk)
    finally:
        await sender.close()


async def _receive_file(stream: _ClientStream, out: IO[bytes]) -> None:
    receiver = Receiver(stream)
    while chunk := await receiver.chunk():
        await asyncio.to_thread(out.write, chunk)


async def _relay_progress(stream: _ClientStream, callback: Callable[[Progress], None]) -> None:
    with contextlib.suppress(StreamClosedError):
        while True:
            msg = await stream.recv()
            if not typeurl.is_type(msg, progress_pb2.Progress):
                continue
            p = typeurl.unpack_as(msg, progress_pb2.Progress)
            callback(
                Progress(
                    event=p.event,
                    name=p.name,
                    parents=tuple(p.parents),
                    progress=p.progress,
                    total=p.total,
                    digest=p.desc.digest if p.HasField("desc") else "",
                    media_type=p.desc.media_type if p.HasField("desc") else "",
                )
            )


async def transfer(
    client: Connection,
    source: Endpoint,
    destination: Endpoint,
    *,
    progress: Callable[[Progress], None] | None = None,
) -> None:
    """Have the daemon move ``source`` to ``destination`` (see the module).

    Returns once the daemon is done; progress events have all been delivered
    to ``progress`` by then, and an export's bytes are all in its ``out``.

    Raises:
        InvalidArgumentError: a source/destination pair the daemon does not know.
        UnimplementedError: a daemon without the Transfer service, or a pair it
            cannot transfer.
        and the errors of the operation (NotFoundError, UnauthenticatedError...).
    """
    session = _Session(client)
    ok = False
    try:
        options = transfer_pb2.TransferOptions()
        if progress is not None:
            options.progress_stream, stream = await session.stream("progress")
            session.spawn(_relay_progress(stream, progress), wait=True)
        request = transfer_pb2.TransferRequest(
            source=await session.marshal(source),
            destination=await session.marshal(destination),
            options=options,
        )
        stub = transfer_pb2_grpc.TransferStub(client.channel)
        with rpc_errors():
            await stub.Transfer(request, metadata=client.metadata())
        ok = True
    finally:
        await session.close(ok=ok)
