"""The sandbox store: CRUD, labels, extensions and filters through the Store service; GC."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pycontainerd.api.services.sandbox.v1 import sandbox_pb2 as pb
from pycontainerd.api.services.sandbox.v1 import sandbox_pb2_grpc as pb_grpc
from pycontainerd.api.types import sandbox_pb2 as types_pb
from pycontainerd.content.local import LocalStore
from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.errdefs import AlreadyExistsError
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.core.types import AnyValue
from pycontainerd.metadata.containers import ContainerStore
from pycontainerd.metadata.content import MetadataContentStore
from pycontainerd.metadata.gc import Collector
from pycontainerd.metadata.namespaces import NamespaceStore
from pycontainerd.metadata.sandboxes import Sandbox, SandboxStore
from pycontainerd.metadata.services.sandboxes import SandboxStoreService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from pycontainerd.metadata.db import MetadataDB

NS = (("containerd-namespace", "default"),)
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


@pytest.fixture(params=["grpcio", "h2grpc"])
async def store(request: pytest.FixtureRequest, db: MetadataDB) -> AsyncIterator[Any]:
    """The Store service on grpcio's server and on ours, through the generated stub."""
    from pycontainerd.api import h2grpc

    server: Any = grpc.aio.server() if request.param == "grpcio" else h2grpc.Server()
    SandboxStoreService(SandboxStore(db)).register(server)
    sockdir = tempfile.mkdtemp(dir="/tmp")
    path = str(Path(sockdir) / "s.sock")
    if request.param == "grpcio":
        server.add_insecure_port(f"unix://{path}")
        await server.start()
    else:
        await server.listen_unix(path)
    try:
        async with grpc.aio.insecure_channel(f"unix://{path}") as channel:
            yield pb_grpc.StoreStub(channel)
    finally:
        await server.stop(None)
        shutil.rmtree(sockdir, ignore_errors=True)


def _sandbox(sid: str, **labels: str) -> types_pb.Sandbox:
    sb = types_pb.Sandbox(sandbox_id=sid, labels=labels, sandboxer="shim")
    sb.runtime.name = "io.containerd.runc.v2"
    sb.runtime.options.type_url = "types.containerd.io/google.protobuf.Empty"
    sb.spec.type_url = SPEC_URL
    sb.spec.value = b'{"ociVersion":"1.1.0"}'
    sb.extensions["ext1"].type_url = "example.com/Ext"
    sb.extensions["ext1"].value = b"\x01\x02"
    return sb


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def test_crud_round_trip(store: Any) -> None:
    created = (
        await store.Create(pb.StoreCreateRequest(sandbox=_sandbox("sb1", a="1")), metadata=NS)
    ).sandbox
    assert created.sandbox_id == "sb1"
    assert created.created_at.ToNanoseconds() > 0
    assert created.created_at == created.updated_at
    got = (await store.Get(pb.StoreGetRequest(sandbox_id="sb1"), metadata=NS)).sandbox
    assert got == created
    assert got.runtime.name == "io.containerd.runc.v2"
    assert got.spec.value == b'{"ociVersion":"1.1.0"}'
    assert got.extensions["ext1"].value == b"\x01\x02"
    assert got.sandboxer == "shim"
    assert dict(got.labels) == {"a": "1"}

    # Update one label by path; others stay; updated_at moves.
    req = _sandbox("sb1", b="2")
    upd = (
        await store.Update(pb.StoreUpdateRequest(sandbox=req, fields=["labels.b"]), metadata=NS)
    ).sandbox
    assert dict(upd.labels) == {"a": "1", "b": "2"}
    assert upd.created_at == created.created_at
    assert upd.updated_at.ToNanoseconds() >= created.updated_at.ToNanoseconds()
    # Without fields: labels, extensions, spec and runtime are replaced.
    req = _sandbox("sb1", c="3")
    del req.extensions["ext1"]
    upd = (await store.Update(pb.StoreUpdateRequest(sandbox=req), metadata=NS)).sandbox
    assert dict(upd.labels) == {"c": "3"}
    assert not upd.extensions

    await store.Delete(pb.StoreDeleteRequest(sandbox_id="sb1"), metadata=NS)
    err = await _error(store.Get(pb.StoreGetRequest(sandbox_id="sb1"), metadata=NS))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == 'bucket "sb1" not found: not found'  # containerd 2.1's text
    err = await _error(store.Delete(pb.StoreDeleteRequest(sandbox_id="sb1"), metadata=NS))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == 'failed to delete sandbox "sb1": not found'


async def test_list_filters_and_namespaces(store: Any) -> None:
    for sid, labels in (("b", {"role": "web"}), ("a", {"role": "db"}), ("c", {})):
        await store.Create(pb.StoreCreateRequest(sandbox=_sandbox(sid, **labels)), metadata=NS)
    everything = (await store.List(pb.StoreListRequest(), metadata=NS)).list
    assert [s.sandbox_id for s in everything] == ["a", "b", "c"]

    async def ids(*filters: str) -> list[str]:
        resp = await store.List(pb.StoreListRequest(filters=list(filters)), metadata=NS)
        return [s.sandbox_id for s in resp.list]

    assert await ids("labels.role==web") == ["b"]
    assert await ids("labels.role") == ["a", "b"]
    assert await ids("id==c", "labels.role==db") == ["a", "c"]  # OR of filters
    assert await ids("id==a,labels.role==web") == []  # AND inside one
    err = await _error(store.List(pb.StoreListRequest(filters=["id >= a"]), metadata=NS))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    other = (("containerd-namespace", "other"),)
    assert not (await store.List(pb.StoreListRequest(), metadata=other)).list
    err = await _error(store.List(pb.StoreListRequest()))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_input(store: Any) -> None:
    await store.Create(pb.StoreCreateRequest(sandbox=_sandbox("dup")), metadata=NS)
    err = await _error(store.Create(pb.StoreCreateRequest(sandbox=_sandbox("dup")), metadata=NS))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert err.details() == 'write error: sandbox bucket "dup" already exists: already exists'
    err = await _error(store.Create(pb.StoreCreateRequest(sandbox=_sandbox("bad id")), metadata=NS))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.details() or "").startswith("failed to validate sandbox: invalid sandbox ID: ")
    req = _sandbox("dup")
    req.runtime.name = "io.containerd.other.v1"
    err = await _error(store.Update(pb.StoreUpdateRequest(sandbox=req), metadata=NS))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "immutable" in (err.details() or "")
    err = await _error(
        store.Update(pb.StoreUpdateRequest(sandbox=req, fields=["sandboxer"]), metadata=NS)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == 'cannot update "sandboxer" field on sandbox "dup": invalid argument'
    err = await _error(store.Update(pb.StoreUpdateRequest(sandbox=_sandbox("nope")), metadata=NS))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_gc_keeps_what_a_sandbox_references(db: MetadataDB, tmp_path: Path) -> None:
    backend = LocalStore(tmp_path / "content")
    cs = MetadataContentStore(db, backend)
    sandboxes = SandboxStore(db)

    async def put(data: bytes) -> str:
        w = await cs.writer("ref-" + data.decode(), total=len(data))
        await w.write(data)
        return await w.commit(len(data), "")

    with with_namespace("default"):
        held = await put(b"held-by-sandbox")
        loose = await put(b"loose")
        await sandboxes.create(
            Sandbox(id="sb1", labels={"containerd.io/gc.ref.content.config": held})
        )
        await Collector(db, backend).collect()
        assert {i.digest async for i in cs.walk()} == {held}
        assert backend.blob_path(held).exists()
        assert not backend.blob_path(loose).exists()
        assert loose == "sha256:" + hashlib.sha256(b"loose").hexdigest()
        await sandboxes.delete("sb1")
        await Collector(db, backend).collect()
        assert {i.digest async for i in cs.walk()} == set()
        assert not backend.blob_path(held).exists()


async def test_containers_reference_sandboxes_and_namespace_delete(db: MetadataDB) -> None:
    sandboxes = SandboxStore(db)
    with with_namespace("ns1"):
        await sandboxes.create(Sandbox(id="sb1", runtime_name="io.containerd.runc.v2"))
        c = await ContainerStore(db).create(
            Container(
                id="c1",
                runtime=RuntimeInfo(name="io.containerd.runc.v2"),
                spec=AnyValue(type_url=SPEC_URL),
                sandbox_id="sb1",
            )
        )
        assert c.sandbox_id == "sb1"
        assert (await ContainerStore(db).list("id==c1"))[0].sandbox_id == "sb1"
        with pytest.raises(AlreadyExistsError):
            await sandboxes.create(Sandbox(id="sb1"))
        await ContainerStore(db).delete("c1")
    # Sandboxes do not block a namespace's deletion (upstream).
    await NamespaceStore(db).delete("ns1")
    with with_namespace("ns1"):
        assert await sandboxes.list() == []
