"""The Containers service (``containerd.services.containers.v1.Containers``).

Events: ``/containers/create``, ``/containers/update``, ``/containers/delete``.
``ListStream`` sends one message per container.

This module is an edge: it may import grpc and the generated code.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from google.protobuf import empty_pb2

from pycontainerd.api.convert import (
    any_to_proto,
    container_from_proto,
    container_to_proto,
    set_timestamp_ns,
)
from pycontainerd.api.errgrpc import aborting_on_error, unary_rpc
from pycontainerd.api.events import container_pb2 as events_pb2
from pycontainerd.api.services.containers.v1 import containers_pb2 as pb
from pycontainerd.api.services.containers.v1 import containers_pb2_grpc as pb_grpc
from pycontainerd.core.namespaces import namespace
from pycontainerd.metadata.services._common import mask_paths, publish_in, request_scope

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    import grpc

    from pycontainerd.core.containers import Container
    from pycontainerd.core.events import Publisher
    from pycontainerd.core.types import AnyValue
    from pycontainerd.metadata.containers import ContainerStore

_Ctx = Any  # grpc.aio.ServicerContext[request, response]


class ContainersService(pb_grpc.ContainersServicer):
    """Serves containers from a ``ContainerStore``."""

    def __init__(self, store: ContainerStore, publisher: Publisher | None = None) -> None:
        self._store = store
        self._publisher = publisher

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_ContainersServicer_to_server(self, server)

    @unary_rpc
    async def Get(self, request: pb.GetContainerRequest, context: _Ctx) -> pb.GetContainerResponse:  # noqa: N802
        c = await self._store.get(request.id)
        return pb.GetContainerResponse(container=container_to_proto(c))

    @unary_rpc
    async def List(  # noqa: N802
        self, request: pb.ListContainersRequest, context: _Ctx
    ) -> pb.ListContainersResponse:
        if not request.filters:
            rows = await self._store.list_rows(_container_from_row)
            return pb.ListContainersResponse(containers=rows)
        found = await self._store.list(*request.filters)
        return pb.ListContainersResponse(containers=[container_to_proto(c) for c in found])

    async def ListStream(  # noqa: N802
        self, request: pb.ListContainersRequest, context: _Ctx
    ) -> AsyncIterator[pb.ListContainerMessage]:
        write_encoded = getattr(context, "write_encoded", None)
        with request_scope(context):
            found: list[Container] = []
            messages: list[pb.ListContainerMessage] = []
            encoded: list[bytes] = []
            async with aborting_on_error(context):
                if request.filters:
                    found = await self._store.list(*request.filters)
                elif write_encoded is not None:  # the daemon's own server: one run of bytes
                    encoded = await self._store.list_rows(_encoded_from_row)
                else:
                    messages = await self._store.list_rows(_message_from_row)
        if encoded:
            assert write_encoded is not None  # noqa: S101 - chosen above
            await write_encoded(encoded)
        for message in messages:
            yield message
        for c in found:
            yield pb.ListContainerMessage(container=container_to_proto(c))

    @unary_rpc
    async def Create(  # noqa: N802
        self, request: pb.CreateContainerRequest, context: _Ctx
    ) -> pb.CreateContainerResponse:
        c = await self._store.create(container_from_proto(request.container))
        await publish_in(
            self._publisher,
            namespace(),
            "/containers/create",
            events_pb2.ContainerCreate(
                id=c.id,
                image=c.image,
                runtime=events_pb2.ContainerCreate.Runtime(
                    name=c.runtime.name,
                    options=None if c.runtime.options is None else any_to_proto(c.runtime.options),
                ),
            ),
        )
        return pb.CreateContainerResponse(container=container_to_proto(c))

    @unary_rpc
    async def Update(  # noqa: N802
        self, request: pb.UpdateContainerRequest, context: _Ctx
    ) -> pb.UpdateContainerResponse:
        c = await self._store.update(container_from_proto(request.container), *mask_paths(request))
        await publish_in(
            self._publisher,
            namespace(),
            "/containers/update",
            events_pb2.ContainerUpdate(
                id=c.id, image=c.image, labels=dict(c.labels), snapshot_key=c.snapshot_key
            ),
        )
        return pb.UpdateContainerResponse(container=container_to_proto(c))

    @unary_rpc
    async def Delete(self, request: pb.DeleteContainerRequest, context: _Ctx) -> empty_pb2.Empty:  # noqa: N802
        await self._store.delete(request.id)
        await publish_in(
            self._publisher,
            namespace(),
            "/containers/delete",
            events_pb2.ContainerDelete(id=request.id),
        )
        return empty_pb2.Empty()


def _container_from_row(row: tuple[Any, ...], extensions: Mapping[str, AnyValue]) -> pb.Container:
    """A stored row (``ContainerStore.ROW_COLUMNS``) as the wire container.

    The same message :func:`container_to_proto` builds from the record (times
    to the microsecond, as the record keeps them), built without the record:
    this runs once per container of an unfiltered listing.
    """
    (cid, labels, image, rt_name, rt_url, rt_value, spec_url, spec_value) = row[:8]
    (snapshotter, snapshot_key, sandbox_id, created, updated) = row[8:]
    out = pb.Container(
        id=cid, image=image, snapshotter=snapshotter, snapshot_key=snapshot_key, sandbox=sandbox_id
    )
    if labels and labels != "{}":
        out_labels = out.labels
        for key, value in json.loads(labels).items():
            out_labels[key] = value
    runtime = out.runtime
    runtime.SetInParent()
    runtime.name = rt_name
    if rt_url is not None:
        runtime.options.type_url = rt_url
        runtime.options.value = bytes(rt_value or b"")
    if spec_url is not None:
        out.spec.type_url = spec_url
        out.spec.value = bytes(spec_value or b"")
    set_timestamp_ns(out.created_at, created)
    set_timestamp_ns(out.updated_at, updated)
    for name, value in extensions.items():
        ext = out.extensions[name]
        ext.type_url = value.type_url
        ext.value = value.value
    return out


def _message_from_row(
    row: tuple[Any, ...], extensions: Mapping[str, AnyValue]
) -> pb.ListContainerMessage:
    message = pb.ListContainerMessage()
    message.container.CopyFrom(_container_from_row(row, extensions))
    return message


def _encoded_from_row(row: tuple[Any, ...], extensions: Mapping[str, AnyValue]) -> bytes:
    return bytes(_message_from_row(row, extensions).SerializeToString())
