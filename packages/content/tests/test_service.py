"""The Content service through a real grpc.aio server on a unix socket.

Until the metadata store is wired in, the service runs over the local store
wrapped in a test-only view that insists on a namespace, as the namespaced
store does, and in the EventStore that publishes deletions.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import tracemalloc
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
import pytest
from google.protobuf import field_mask_pb2

from pycontainerd.api.events import content_pb2 as content_events
from pycontainerd.api.services.content.v1 import content_pb2, content_pb2_grpc
from pycontainerd.content.local import LocalStore
from pycontainerd.content.store import EventStore
from pycontainerd.core.namespaces import lease, namespace_required
from pycontainerd.events.exchange import Exchange, unpack_event

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
    from pathlib import Path

    from pycontainerd.core.content import Info, ReaderAt, Status, Writer

NS = (("containerd-namespace", "default"),)
MISSING = "sha256:" + "0" * 64
STAT, WRITE, COMMIT = content_pb2.STAT, content_pb2.WRITE, content_pb2.COMMIT


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class NamespaceRequiredStore:
    """Test-only: a LocalStore that, like the namespaced store, needs a namespace."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.writer_leases: list[str | None] = []  # the current lease of each writer() call

    async def info(self, dgst: str) -> Info:
        namespace_required()
        return await self.store.info(dgst)

    async def update(self, info: Info, *fieldpaths: str) -> Info:
        namespace_required()
        return await self.store.update(info, *fieldpaths)

    async def walk(self, *filters: str) -> AsyncIterator[Info]:
        namespace_required()
        async for info in self.store.walk(*filters):
            yield info

    async def delete(self, dgst: str) -> None:
        namespace_required()
        await self.store.delete(dgst)

    async def reader_at(self, dgst: str) -> ReaderAt:
        namespace_required()
        return await self.store.reader_at(dgst)

    async def status(self, ref: str) -> Status:
        namespace_required()
        return await self.store.status(ref)

    async def list_statuses(self, *filters: str) -> list[Status]:
        namespace_required()
        return await self.store.list_statuses(*filters)

    async def abort(self, ref: str) -> None:
        namespace_required()
        await self.store.abort(ref)

    async def writer(self, ref: str, *, total: int = 0, expected: str = "") -> Writer:
        namespace_required()
        self.writer_leases.append(lease())
        return await self.store.writer(ref, total=total, expected=expected)

    def info_now(self, ns: str, dgst: str) -> Info | None:
        """The Info fast path's store side: never at once (the normal path answers)."""
        return None

    def read_now(self, ns: str, dgst: str, offset: int, size: int) -> tuple[int, bytes] | None:
        """The fast path's store side, counting what it answered."""
        got = self.store.read_now(dgst, offset, size)
        self.fast_answers += got is not None
        return got

    fast_answers = 0


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = tempfile.mkdtemp(dir="/tmp", prefix="ct-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def exchange() -> Exchange:
    return Exchange()


@pytest.fixture
def local(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "content", lock_retries=2)


@pytest.fixture(params=["grpcio", "h2grpc"])
async def stub(
    request: pytest.FixtureRequest, sockdir: str, local: LocalStore, exchange: Exchange
) -> AsyncIterator[content_pb2_grpc.ContentAsyncStub]:
    """A client of the service on grpcio's server and on ours (what the daemon's socket runs)."""
    from pycontainerd.api import h2grpc
    from pycontainerd.content.service import ContentService

    service = ContentService(EventStore(NamespaceRequiredStore(local), exchange))
    path = f"{sockdir}/c.sock"
    server: Any
    if request.param == "grpcio":
        server = grpc.aio.server()
        service.register(server)
        server.add_insecure_port(f"unix://{path}")
        await server.start()
    else:
        server = h2grpc.Server()
        service.register(server)
        await server.listen_unix(path)
    try:
        async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
            yield content_pb2_grpc.ContentStub(channel)
    finally:
        await server.stop(None)


def reqs(*items: content_pb2.WriteContentRequest) -> Iterable[content_pb2.WriteContentRequest]:
    return list(items)


async def write(
    stub: content_pb2_grpc.ContentAsyncStub, *items: content_pb2.WriteContentRequest
) -> list[content_pb2.WriteContentResponse]:
    call = stub.Write(iter(items), metadata=NS)
    return [resp async for resp in call]


async def ingest(
    stub: content_pb2_grpc.ContentAsyncStub,
    ref: str,
    data: bytes,
    labels: dict[str, str] | None = None,
) -> str:
    out = await write(
        stub,
        content_pb2.WriteContentRequest(
            action=COMMIT,
            ref=ref,
            total=len(data),
            expected=sha256(data),
            data=data,
            labels=labels,
        ),
    )
    return out[-1].digest


async def expect_error(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as excinfo:
        await call  # type: ignore[misc]
    assert excinfo.value.code() is code, excinfo.value.details()
    return excinfo.value.details() or ""


T = TypeVar("T")


async def collect(call: AsyncIterable[T]) -> list[T]:
    return [m async for m in call]


# -- unary RPCs ------------------------------------------------------------


async def test_info_update_delete(
    stub: content_pb2_grpc.ContentAsyncStub, exchange: Exchange
) -> None:
    dgst = await ingest(stub, "r1", b"hello", {"a": "1"})
    info = (await stub.Info(content_pb2.InfoRequest(digest=dgst), metadata=NS)).info
    assert (info.digest, info.size, dict(info.labels)) == (dgst, 5, {"a": "1"})
    assert info.created_at.seconds > 0

    resp = await stub.Update(
        content_pb2.UpdateRequest(
            info=content_pb2.Info(digest=dgst, labels={"b": "2"}),
            update_mask=field_mask_pb2.FieldMask(paths=["labels.b", "labels.a"]),
        ),
        metadata=NS,
    )
    assert dict(resp.info.labels) == {"b": "2"}
    assert resp.info.size == 5

    details = await expect_error(
        stub.Update(
            content_pb2.UpdateRequest(
                info=content_pb2.Info(digest=dgst, size=1),
                update_mask=field_mask_pb2.FieldMask(paths=["size"]),
            ),
            metadata=NS,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details == f'cannot update "size" field on content info "{dgst}": invalid argument'

    sub = exchange.subscribe('topic=="/content/delete"')
    await stub.Delete(content_pb2.DeleteContentRequest(digest=dgst), metadata=NS)
    env = await asyncio.wait_for(anext(sub), 5)
    assert env.namespace == "default"
    assert env.event.type_url == "containerd.events.ContentDelete"
    assert unpack_event(env.event) == content_events.ContentDelete(digest=dgst)

    details = await expect_error(
        stub.Info(content_pb2.InfoRequest(digest=dgst), metadata=NS), grpc.StatusCode.NOT_FOUND
    )
    assert details == f"content digest {dgst}: not found"
    await expect_error(
        stub.Delete(content_pb2.DeleteContentRequest(digest=dgst), metadata=NS),
        grpc.StatusCode.NOT_FOUND,
    )


@pytest.mark.parametrize("bad", ["sha256:zz", "nonsense", ""])
async def test_invalid_digest(stub: content_pb2_grpc.ContentAsyncStub, bad: str) -> None:
    for call in (
        stub.Info(content_pb2.InfoRequest(digest=bad), metadata=NS),
        stub.Delete(content_pb2.DeleteContentRequest(digest=bad), metadata=NS),
        stub.Update(content_pb2.UpdateRequest(info=content_pb2.Info(digest=bad)), metadata=NS),
    ):
        details = await expect_error(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert details == f'"{bad}" failed validation'
    read = stub.Read(content_pb2.ReadContentRequest(digest=bad), metadata=NS)
    details = await expect_error(collect(read), grpc.StatusCode.INVALID_ARGUMENT)
    assert details == f'"{bad}" failed validation'


async def test_namespace_is_required(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    details = await expect_error(
        stub.Info(content_pb2.InfoRequest(digest=MISSING)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert details == "namespace is required: failed precondition"
    call = stub.Write(iter([content_pb2.WriteContentRequest(ref="x")]))
    details = await expect_error(collect(call), grpc.StatusCode.FAILED_PRECONDITION)
    assert details == "namespace is required: failed precondition"
    bad_ns = (("containerd-namespace", "bad ns"),)
    details = await expect_error(
        stub.Info(content_pb2.InfoRequest(digest=MISSING), metadata=bad_ns),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details.startswith('namespace validation: identifier "bad ns" must match')


async def test_list_in_batches_with_filters(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    digests = set()
    for i in range(205):
        labels = {"even": "yes"} if i % 2 == 0 else {}
        digests.add(await ingest(stub, f"r{i}", f"blob {i}".encode(), labels))
    batches = await collect(stub.List(content_pb2.ListContentRequest(), metadata=NS))
    assert [len(b.info) for b in batches] == [100, 100, 5]
    listed = {i.digest for b in batches for i in b.info}
    assert listed == digests
    first = batches[0].info[0]
    assert first.created_at.seconds > 0
    assert not first.HasField("updated_at"), "List leaves updated_at out, as upstream"

    even = await collect(
        stub.List(content_pb2.ListContentRequest(filters=["labels.even==yes"]), metadata=NS)
    )
    assert sum(len(b.info) for b in even) == 103

    details = await expect_error(
        collect(stub.List(content_pb2.ListContentRequest(filters=["labels.x=y"]), metadata=NS)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "parse error" in details


# -- Read -------------------------------------------------------------------


async def test_read_offsets_and_sizes(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    data = bytes(range(256)) * 10
    dgst = await ingest(stub, "read", data)

    async def read(offset: int, size: int) -> tuple[bytes, list[int]]:
        msgs = await collect(
            stub.Read(
                content_pb2.ReadContentRequest(digest=dgst, offset=offset, size=size), metadata=NS
            )
        )
        return b"".join(m.data for m in msgs), [m.offset for m in msgs]

    assert await read(0, 0) == (data, [0])
    assert (await read(100, 50))[0] == data[100:150]
    assert (await read(100, 50))[1] == [100]
    assert (await read(-5, 0))[0] == data, "negative offsets read from the start"
    assert (await read(2500, 1000))[0] == data[2500:], "a size past the end reads to the end"
    assert (await read(len(data), 0))[0] == b""
    details = await expect_error(
        read(len(data) + 1, 0),
        grpc.StatusCode.OUT_OF_RANGE,
    )
    assert details == f"read past object length {len(data)} bytes"
    await expect_error(
        collect(stub.Read(content_pb2.ReadContentRequest(digest=MISSING), metadata=NS)),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_read_of_several_messages(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    """Every message but the last is written ahead; offsets and bytes are the stream's."""
    chunk = 1 << 20
    data = hashlib.sha256(b"several").digest() * ((chunk * 5 // 2) // 32)
    dgst = await ingest(stub, "several", data)
    msgs = await collect(
        stub.Read(content_pb2.ReadContentRequest(digest=dgst, offset=10), metadata=NS)
    )
    assert [m.offset for m in msgs] == [10, 10 + chunk, 10 + 2 * chunk]
    assert b"".join(m.data for m in msgs) == data[10:]
    msgs = await collect(
        stub.Read(
            content_pb2.ReadContentRequest(digest=dgst, offset=chunk, size=chunk), metadata=NS
        )
    )
    assert [(m.offset, m.data) for m in msgs] == [(chunk, data[chunk : 2 * chunk])]


async def test_read_at_the_end_sends_no_data(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    """An empty range answers no message on both servers, as upstream's stream does."""
    data = b"twelve bytes"
    dgst = await ingest(stub, "at-end", data)
    msgs = await collect(
        stub.Read(content_pb2.ReadContentRequest(digest=dgst, offset=len(data)), metadata=NS)
    )
    assert msgs == []


# -- Write protocol ------------------------------------------------------------


async def test_write_protocol_stat_write_commit(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    data = b"0123456789"
    out = await write(
        stub,
        content_pb2.WriteContentRequest(action=STAT, ref="w1", total=10, expected=sha256(data)),
        content_pb2.WriteContentRequest(action=WRITE, data=data[:4]),
        content_pb2.WriteContentRequest(action=WRITE, offset=4, data=data[4:7]),
        content_pb2.WriteContentRequest(action=STAT),
        content_pb2.WriteContentRequest(action=COMMIT, offset=7, data=data[7:], labels={"k": "v"}),
    )
    assert [r.action for r in out] == [STAT, WRITE, WRITE, STAT, COMMIT]
    assert [r.offset for r in out] == [0, 4, 7, 7, 10]
    assert out[0].digest == sha256(b"")
    assert out[2].digest == sha256(data[:7])
    assert all(r.total == 10 for r in out)
    assert out[-1].digest == sha256(data)
    assert out[0].started_at.seconds > 0
    info = await stub.Info(content_pb2.InfoRequest(digest=sha256(data)), metadata=NS)
    assert dict(info.info.labels) == {"k": "v"}


async def test_write_runs_under_the_calls_lease(sockdir: str, local: LocalStore) -> None:
    # The namespaced store references what a writer commits from the current lease;
    # without it, a collection during a pull removes the blobs fetched so far.
    from pycontainerd.content.service import ContentService

    store = NamespaceRequiredStore(local)
    server = grpc.aio.server()
    ContentService(store).register(server)
    address = f"unix://{sockdir}/c.sock"
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = content_pb2_grpc.ContentStub(channel)
            for i, metadata in enumerate([(*NS, ("containerd-lease", "pull-1")), NS]):
                data = b"leased %d" % i
                req = content_pb2.WriteContentRequest(
                    action=COMMIT, ref=f"r{i}", total=len(data), expected=sha256(data), data=data
                )
                [resp async for resp in stub.Write(iter([req]), metadata=metadata)]
    finally:
        await server.stop(None)
    assert store.writer_leases == ["pull-1", None]


async def test_write_first_message_needs_ref(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    details = await expect_error(
        write(stub, content_pb2.WriteContentRequest(action=WRITE, data=b"x")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert details == "first message must have a reference"


async def test_write_wrong_offset(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    details = await expect_error(
        write(
            stub,
            content_pb2.WriteContentRequest(action=WRITE, ref="off", data=b"abc"),
            content_pb2.WriteContentRequest(action=WRITE, offset=10, data=b"def"),
        ),
        grpc.StatusCode.OUT_OF_RANGE,
    )
    assert details == "write @10 must occur at current offset 3"
    status = await stub.Status(content_pb2.StatusRequest(ref="off"), metadata=NS)
    assert status.status.offset == 3, "the ingest survives the failed stream"


async def test_write_offset_zero_restarts(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    out = await write(
        stub,
        content_pb2.WriteContentRequest(action=WRITE, ref="restart", data=b"garbage"),
        content_pb2.WriteContentRequest(action=COMMIT, offset=0, data=b"good"),
    )
    assert out[-1].digest == sha256(b"good")
    assert out[-1].offset == 4


async def test_write_wrong_digest(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    details = await expect_error(
        write(
            stub,
            content_pb2.WriteContentRequest(
                action=COMMIT, ref="dg", total=3, expected=MISSING, data=b"abc"
            ),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details == (
        f"unexpected commit digest {sha256(b'abc')}, expected {MISSING}: failed precondition"
    )


async def test_write_wrong_total(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    details = await expect_error(
        write(
            stub,
            content_pb2.WriteContentRequest(action=WRITE, ref="r4", total=3, data=b"abcd"),
            content_pb2.WriteContentRequest(action=COMMIT, offset=4),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details == '"r4" failed size validation: 4 != 3: failed precondition'
    # resuming with another total than the stored one is refused
    details = await expect_error(
        write(stub, content_pb2.WriteContentRequest(action=STAT, ref="r4", total=9)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert details.startswith("provided total differs from status")


async def test_write_expected_already_present(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    dgst = await ingest(stub, "orig", b"present")
    details = await expect_error(
        write(stub, content_pb2.WriteContentRequest(action=STAT, ref="again", expected=dgst)),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert details == f"content {dgst}: already exists"
    details = await expect_error(
        write(
            stub,
            content_pb2.WriteContentRequest(action=WRITE, ref="late", data=b"pre"),
            content_pb2.WriteContentRequest(action=WRITE, offset=3, expected=dgst, data=b"x"),
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert details == f"blob with expected digest {dgst} exists"
    await expect_error(
        stub.Status(content_pb2.StatusRequest(ref="late"), metadata=NS), grpc.StatusCode.NOT_FOUND
    )


async def test_second_writer_is_unavailable(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    first = stub.Write(metadata=NS)
    await first.write(content_pb2.WriteContentRequest(action=STAT, ref="busy"))
    resp = await first.read()
    assert isinstance(resp, content_pb2.WriteContentResponse)
    assert resp.action == STAT
    details = await expect_error(
        write(stub, content_pb2.WriteContentRequest(action=STAT, ref="busy")),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert details.startswith("ref busy locked for ")
    assert details.endswith(": unavailable")
    await first.done_writing()
    assert await first.read() is grpc.aio.EOF


async def test_status_list_statuses_abort(stub: content_pb2_grpc.ContentAsyncStub) -> None:
    for ref in ("s1", "s2", "x1"):
        await write(
            stub, content_pb2.WriteContentRequest(action=WRITE, ref=ref, total=9, data=b"ab")
        )
    st = (await stub.Status(content_pb2.StatusRequest(ref="s1"), metadata=NS)).status
    assert (st.ref, st.offset, st.total) == ("s1", 2, 9)
    assert st.started_at.seconds > 0
    listed = await stub.ListStatuses(
        content_pb2.ListStatusesRequest(filters=["ref~=s[0-9]"]), metadata=NS
    )
    assert sorted(s.ref for s in listed.statuses) == ["s1", "s2"]
    await stub.Abort(content_pb2.AbortRequest(ref="s1"), metadata=NS)
    details = await expect_error(
        stub.Status(content_pb2.StatusRequest(ref="s1"), metadata=NS), grpc.StatusCode.NOT_FOUND
    )
    assert details == 'could not get status for ref "s1": reference s1: not found'
    details = await expect_error(
        stub.Abort(content_pb2.AbortRequest(ref="nope"), metadata=NS), grpc.StatusCode.NOT_FOUND
    )
    assert details == "reference nope: not found"


async def test_stream_cut_mid_blob_then_resume(
    stub: content_pb2_grpc.ContentAsyncStub, local: LocalStore
) -> None:
    data = hashlib.sha256(b"seed").digest() * 40_000  # 1.28 MB
    half = len(data) // 2
    call = stub.Write(metadata=NS)
    await call.write(
        content_pb2.WriteContentRequest(
            action=WRITE, ref="cut", total=len(data), expected=sha256(data), data=data[:half]
        )
    )
    resp = await call.read()
    assert isinstance(resp, content_pb2.WriteContentResponse)
    assert resp.offset == half
    call.cancel()  # the client goes away mid-blob

    async def status_unlocked() -> int:
        # the server closes the writer when it sees the cancellation; retry a
        # locked ref as containerd's client does
        async with asyncio.timeout(10):
            while True:
                try:
                    out = await write(stub, content_pb2.WriteContentRequest(action=STAT, ref="cut"))
                except grpc.aio.AioRpcError as exc:
                    if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise
                    await asyncio.sleep(0.02)
                    continue
                return out[0].offset

    assert await status_unlocked() == half
    assert [i async for i in local.walk()] == [], "no blob is visible after the cut"
    out = await write(
        stub,
        content_pb2.WriteContentRequest(action=STAT, ref="cut", total=len(data)),
        content_pb2.WriteContentRequest(action=COMMIT, offset=half, data=data[half:]),
    )
    assert out[-1].digest == sha256(data)
    msgs = await collect(
        stub.Read(content_pb2.ReadContentRequest(digest=sha256(data)), metadata=NS)
    )
    assert b"".join(m.data for m in msgs) == data


async def test_large_blob_streams_in_bounded_memory(
    stub: content_pb2_grpc.ContentAsyncStub,
) -> None:
    chunk = 1 << 20
    count = 24  # 24 MiB, more than the 16 MiB the issue asks for
    block = hashlib.sha256(b"large").digest() * (chunk // 32)
    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(block)
    dgst = "sha256:" + expected.hexdigest()

    def requests() -> Iterator[content_pb2.WriteContentRequest]:
        yield content_pb2.WriteContentRequest(
            action=STAT, ref="large", total=chunk * count, expected=dgst
        )
        for i in range(count):
            yield content_pb2.WriteContentRequest(action=WRITE, offset=i * chunk, data=block)
        yield content_pb2.WriteContentRequest(action=COMMIT, offset=chunk * count)

    tracemalloc.start()
    try:
        out = [r async for r in stub.Write(requests(), metadata=NS)]
        assert out[-1].digest == dgst
        got = hashlib.sha256()
        size = 0
        async for msg in stub.Read(content_pb2.ReadContentRequest(digest=dgst), metadata=NS):
            assert len(msg.data) <= chunk
            got.update(msg.data)
            size += len(msg.data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == chunk * count
    assert "sha256:" + got.hexdigest() == dgst
    assert peak < 12 * chunk, f"peak Python allocations {peak} bytes for a {size}-byte blob"


# -- the Read fast path (the daemon's own server) ------------------------------


@pytest.mark.parametrize(
    ("offset", "size", "want", "fast"),
    [
        (0, 0, b"0123456789abcdef", True),
        (4, 4, b"4567", True),
        (10, 100, b"abcdef", True),
        (-5, 3, b"012", False),  # a negative offset reads from 0 (the full path decides)
        (16, 0, None, False),  # an empty range: no message at all
        (17, 0, grpc.StatusCode.OUT_OF_RANGE, False),
    ],
)
async def test_read_fast_path_answers_like_the_full_path(
    sockdir: str, offset: int, size: int, want: bytes | grpc.StatusCode | None, fast: bool
) -> None:
    """Small reads from a memory file system are answered on the loop; the rest go the
    full way, and both give the stream's messages and errors."""
    from pycontainerd.api import h2grpc
    from pycontainerd.content.service import ContentService

    shm = tempfile.mkdtemp(dir="/dev/shm", prefix="ct-")
    try:
        store = NamespaceRequiredStore(LocalStore(f"{shm}/content"))
        server: Any = h2grpc.Server()
        ContentService(EventStore(store, Exchange())).register(server)
        await server.listen_unix(f"{sockdir}/c.sock")
        try:
            async with grpc.aio.insecure_channel(f"unix://{sockdir}/c.sock") as channel:
                stub = content_pb2_grpc.ContentStub(channel)
                dgst = await ingest(stub, "fast", b"0123456789abcdef")
                req = content_pb2.ReadContentRequest(digest=dgst, offset=offset, size=size)
                if isinstance(want, grpc.StatusCode):
                    await expect_error(collect(stub.Read(req, metadata=NS)), want)
                else:
                    msgs = await collect(stub.Read(req, metadata=NS))
                    assert [m.data for m in msgs] == ([want] if want is not None else [])
                    assert all(m.offset == max(offset, 0) for m in msgs)
        finally:
            await server.stop(None)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    assert store.fast_answers == (1 if fast else 0)
