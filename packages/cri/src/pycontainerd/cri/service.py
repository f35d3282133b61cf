"""The CRI gRPC services: ``runtime.v1.RuntimeService`` and ``runtime.v1.ImageService``.

What is built answers as containerd's CRI does; every other method aborts
with UNIMPLEMENTED and a message saying so. Exec, Attach and PortForward
answer with a URL on the streaming server
(:mod:`pycontainerd.cri.streaming_handler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from importlib import metadata
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.api.cri.v1 import api_pb2_grpc as pb_grpc
from pycontainerd.api.errgrpc import aborting_on_error
from pycontainerd.core.errdefs import NotFoundError, UnavailableError
from pycontainerd.cri.catalog import CriImage, ImageCatalog, disk_usage
from pycontainerd.cri.cni import DEFAULT_IFNAME
from pycontainerd.cri.containers import ContainerManager, CriContainer
from pycontainerd.cri.spec import cgroups_path
from pycontainerd.cri.stats import Usage, process_count, read_net_dev, read_usage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from pycontainerd.cri.config import CriConfig
    from pycontainerd.cri.sandbox import PodSandbox, SandboxManager
    from pycontainerd.cri.streaming.server import StreamingServer

_Ctx = grpc.aio.ServicerContext[Any, Any]

RUNTIME_NAME = "containerd"
RUNTIME_API_VERSION = "v1"
KUBE_API_VERSION = "0.1.0"
NETWORK_NOT_READY_REASON = "NetworkPluginNotReady"
NETWORK_NOT_READY_MESSAGE = "Network plugin returns error: cni plugin not initialized"


def _version() -> str:
    try:
        return metadata.version("pycontainerd-cri")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _to_dict(message: Any) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, use_integers_for_enums=True
    )
    return result


class CriService:
    """Both CRI services on the daemon's gRPC server."""

    def __init__(self, config: CriConfig, sandboxes: SandboxManager, image_fs: Path) -> None:
        self.config = config
        self.image_fs = image_fs
        """The snapshotter's directory, whose usage ImageFsInfo reports."""
        self.sandboxes = sandboxes
        self.catalog = ImageCatalog(sandboxes.md)
        self.containers = ContainerManager(sandboxes, self.catalog)
        self.containers.on_exit = lambda c: self.emit(c.id, pb.CONTAINER_STOPPED_EVENT)
        self.subscribers: set[asyncio.Queue[pb.ContainerEventResponse]] = set()
        self.streaming: StreamingServer | None = None
        """The exec/attach/port-forward server (started by :meth:`start_streaming`)."""
        # The methods not built yet are filled in by _fill_unimplemented() below,
        # which mypy cannot see.
        self.runtime = RuntimeService(self)  # type: ignore[abstract]
        self.images = ImageService(self)  # type: ignore[abstract]

    def emit(self, cid: str, kind: pb.ContainerEventType.ValueType, sandbox_id: str = "") -> None:
        """Send a container (or sandbox) event to every GetContainerEvents stream."""
        if not self.subscribers:
            return
        event = pb.ContainerEventResponse(
            container_id=cid, container_event_type=kind, created_at=time.time_ns()
        )
        c = self.containers.containers.get(cid)
        sandbox_id = sandbox_id or (c.sandbox_id if c is not None else cid)
        sb = self.sandboxes.sandboxes.get(sandbox_id)
        if sb is not None:
            event.pod_sandbox_status.CopyFrom(_pod_status(sb))
            event.containers_statuses.extend(
                _container_status(x) for x in self.containers.select(sandbox_id=sb.id)
            )
        for queue in list(self.subscribers):
            queue.put_nowait(event)

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RuntimeServiceServicer_to_server(self.runtime, server)
        pb_grpc.add_ImageServiceServicer_to_server(self.images, server)

    async def start_streaming(self) -> None:
        """Start the streaming server on ``stream_server_address:stream_server_port``."""
        from pycontainerd.cri.streaming_handler import make_server

        server = make_server(self.config, self.containers, self.sandboxes, self.containers.io_dir)
        await server.start()
        self.streaming = server

    def streaming_server(self) -> StreamingServer:
        if self.streaming is None:
            msg = "the streaming server is not running"
            raise UnavailableError(msg)
        return self.streaming

    async def aclose(self) -> None:
        if self.streaming is not None:
            await self.streaming.close()
        await self.sandboxes.aclose()


def _sandbox_metadata(sb: PodSandbox) -> pb.PodSandboxMetadata:
    m = sb.metadata
    return pb.PodSandboxMetadata(
        name=str(m.get("name", "")),
        uid=str(m.get("uid", "")),
        namespace=str(m.get("namespace", "")),
        attempt=int(m.get("attempt", 0)),
    )


def _pod_status(sb: PodSandbox) -> pb.PodSandboxStatus:
    ns = sb.namespace_options
    status = pb.PodSandboxStatus(
        id=sb.id,
        metadata=_sandbox_metadata(sb),
        state=pb.PodSandboxState.Value(sb.state),
        created_at=sb.created_at,
        labels=sb.labels,
        annotations=sb.annotations,
        runtime_handler=sb.runtime_handler,
    )
    if sb.ips:
        status.network.ip = sb.ips[0]
        status.network.additional_ips.extend(pb.PodIP(ip=ip) for ip in sb.ips[1:])
    opts = status.linux.namespaces.options
    opts.network = pb.NODE if sb.host_network else pb.POD
    opts.pid = pb.NamespaceMode.ValueType(ns.get("pid", pb.POD))
    opts.ipc = pb.NamespaceMode.ValueType(ns.get("ipc", pb.POD))
    return status


def _container_status(c: CriContainer) -> pb.ContainerStatus:
    mounts = [
        json_format.ParseDict(m, pb.Mount(), ignore_unknown_fields=True)
        for m in c.config.get("mounts") or []
    ]
    return pb.ContainerStatus(
        mounts=mounts,
        id=c.id,
        metadata=_container_metadata(c),
        state=pb.ContainerState.Value(c.state),
        created_at=c.created_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        exit_code=c.exit_code,
        image=pb.ImageSpec(image=c.image),
        image_ref=c.image_id,
        image_id=c.image_id,
        reason=c.reason,
        labels=c.labels,
        annotations=c.annotations,
        log_path=c.log_path,
    )


def _cgroups_of(c: CriContainer) -> str:
    """The container's ``cgroupsPath`` from its OCI spec."""
    return str(json.loads(c.spec).get("linux", {}).get("cgroupsPath", ""))


def _container_metadata(c: CriContainer) -> pb.ContainerMetadata:
    return pb.ContainerMetadata(
        name=str(c.metadata.get("name", "")), attempt=int(c.metadata.get("attempt", 0))
    )


class RuntimeService(pb_grpc.RuntimeServiceServicer):
    """``runtime.v1.RuntimeService``."""

    def __init__(self, cri: CriService) -> None:
        self.cri = cri

    async def Version(self, request: pb.VersionRequest, context: _Ctx) -> pb.VersionResponse:  # noqa: N802
        return pb.VersionResponse(
            version=KUBE_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=_version(),
            runtime_api_version=RUNTIME_API_VERSION,
        )

    async def Status(self, request: pb.StatusRequest, context: _Ctx) -> pb.StatusResponse:  # noqa: N802
        runtime_ready = pb.RuntimeCondition(type="RuntimeReady", status=True)
        network_ready = pb.RuntimeCondition(type="NetworkReady", status=True)
        networks = self.cri.sandboxes.cni.networks()
        if not networks:
            network_ready.status = False
            network_ready.reason = NETWORK_NOT_READY_REASON
            network_ready.message = NETWORK_NOT_READY_MESSAGE
        resp = pb.StatusResponse(
            status=pb.RuntimeStatus(conditions=[runtime_ready, network_ready]),
            runtime_handlers=[pb.RuntimeHandler(name=n) for n in sorted(self.cri.config.runtimes)],
        )
        if request.verbose:
            cfg = self.cri.config
            resp.info["config"] = json.dumps(
                {
                    "sandboxImage": cfg.sandbox_image,
                    "cni": {"binDir": cfg.cni.bin_dir, "confDir": cfg.cni.conf_dir},
                    "defaultRuntimeName": cfg.default_runtime_name,
                    "snapshotter": cfg.snapshotter,
                }
            )
            resp.info["cniconfig"] = json.dumps(
                {"networks": [{"name": n.name, "source": n.source.name} for n in networks]}
            )
        return resp

    async def RuntimeConfig(  # noqa: N802
        self, request: pb.RuntimeConfigRequest, context: _Ctx
    ) -> pb.RuntimeConfigResponse:
        driver = pb.SYSTEMD if self.cri.config.cgroup_driver == "systemd" else pb.CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    # -- pod sandboxes ------------------------------------------------------------

    async def RunPodSandbox(  # noqa: N802
        self, request: pb.RunPodSandboxRequest, context: _Ctx
    ) -> pb.RunPodSandboxResponse:
        config = request.config
        host_network = config.linux.security_context.namespace_options.network == pb.NODE
        async with aborting_on_error(context):
            sb = await self.cri.sandboxes.run(
                _to_dict(config), request.runtime_handler, host_network
            )
        self.cri.emit(sb.id, pb.CONTAINER_CREATED_EVENT)
        self.cri.emit(sb.id, pb.CONTAINER_STARTED_EVENT)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sb.id)

    async def StopPodSandbox(  # noqa: N802
        self, request: pb.StopPodSandboxRequest, context: _Ctx
    ) -> pb.StopPodSandboxResponse:
        async with aborting_on_error(context):
            await self.cri.containers.stop_in(request.pod_sandbox_id)
            await self.cri.sandboxes.stop(request.pod_sandbox_id)
        self.cri.emit(request.pod_sandbox_id, pb.CONTAINER_STOPPED_EVENT)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(  # noqa: N802
        self, request: pb.RemovePodSandboxRequest, context: _Ctx
    ) -> pb.RemovePodSandboxResponse:
        async with aborting_on_error(context):
            await self.cri.containers.remove_in(request.pod_sandbox_id)
            await self.cri.sandboxes.remove(request.pod_sandbox_id)
        self.cri.emit(request.pod_sandbox_id, pb.CONTAINER_DELETED_EVENT)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(  # noqa: N802
        self, request: pb.PodSandboxStatusRequest, context: _Ctx
    ) -> pb.PodSandboxStatusResponse:
        async with aborting_on_error(context):
            sb = await self.cri.sandboxes.refresh(self.cri.sandboxes.get(request.pod_sandbox_id))
        resp = pb.PodSandboxStatusResponse(status=_pod_status(sb), timestamp=time.time_ns())
        if request.verbose:
            resp.info["info"] = json.dumps(
                {
                    "pid": sb.pid,
                    "netNamespacePath": sb.netns_path,
                    "runtimeHandler": sb.runtime_handler,
                    "image": self.cri.config.sandbox_image,
                    "cniResult": sb.cni_results,
                    "cniCheck": await self.cri.sandboxes.check_network(sb) or "ok",
                    "config": sb.config,
                }
            )
        return resp

    async def ListPodSandbox(  # noqa: N802
        self, request: pb.ListPodSandboxRequest, context: _Ctx
    ) -> pb.ListPodSandboxResponse:
        f = request.filter
        state = None
        if request.HasField("filter") and f.HasField("state"):
            state = pb.PodSandboxState.Name(f.state.state)
        items = []
        for sb in self.cri.sandboxes.select(sid=f.id, labels=dict(f.label_selector)):
            await self.cri.sandboxes.refresh(sb)
            if state is not None and sb.state != state:
                continue
            items.append(
                pb.PodSandbox(
                    id=sb.id,
                    metadata=_sandbox_metadata(sb),
                    state=pb.PodSandboxState.Value(sb.state),
                    created_at=sb.created_at,
                    labels=sb.labels,
                    annotations=sb.annotations,
                    runtime_handler=sb.runtime_handler,
                )
            )
        return pb.ListPodSandboxResponse(items=items)

    # -- containers ---------------------------------------------------------------------

    async def CreateContainer(  # noqa: N802
        self, request: pb.CreateContainerRequest, context: _Ctx
    ) -> pb.CreateContainerResponse:
        async with aborting_on_error(context):
            c = await self.cri.containers.create(request.pod_sandbox_id, _to_dict(request.config))
        self.cri.emit(c.id, pb.CONTAINER_CREATED_EVENT)
        return pb.CreateContainerResponse(container_id=c.id)

    async def StartContainer(  # noqa: N802
        self, request: pb.StartContainerRequest, context: _Ctx
    ) -> pb.StartContainerResponse:
        async with aborting_on_error(context):
            await self.cri.containers.start(request.container_id)
        self.cri.emit(self.cri.containers.get(request.container_id).id, pb.CONTAINER_STARTED_EVENT)
        return pb.StartContainerResponse()

    async def StopContainer(  # noqa: N802
        self, request: pb.StopContainerRequest, context: _Ctx
    ) -> pb.StopContainerResponse:
        async with aborting_on_error(context):
            await self.cri.containers.stop(request.container_id, float(request.timeout))
        return pb.StopContainerResponse()

    async def RemoveContainer(  # noqa: N802
        self, request: pb.RemoveContainerRequest, context: _Ctx
    ) -> pb.RemoveContainerResponse:
        async with aborting_on_error(context):
            cid, sandbox_id = "", ""
            with contextlib.suppress(NotFoundError):
                found = self.cri.containers.get(request.container_id)
                cid, sandbox_id = found.id, found.sandbox_id
            await self.cri.containers.remove(request.container_id)
        if cid:
            self.cri.emit(cid, pb.CONTAINER_DELETED_EVENT, sandbox_id)
        return pb.RemoveContainerResponse()

    async def ListContainers(  # noqa: N802
        self, request: pb.ListContainersRequest, context: _Ctx
    ) -> pb.ListContainersResponse:
        f = request.filter
        state = None
        if request.HasField("filter") and f.HasField("state"):
            state = pb.ContainerState.Name(f.state.state)
        found = self.cri.containers.select(
            cid=f.id, sandbox_id=f.pod_sandbox_id, state=state, labels=dict(f.label_selector)
        )
        return pb.ListContainersResponse(
            containers=[
                pb.Container(
                    id=c.id,
                    pod_sandbox_id=c.sandbox_id,
                    metadata=_container_metadata(c),
                    image=pb.ImageSpec(image=c.image),
                    image_ref=c.image_id,
                    image_id=c.image_id,
                    state=pb.ContainerState.Value(c.state),
                    created_at=c.created_at,
                    labels=c.labels,
                    annotations=c.annotations,
                )
                for c in found
            ]
        )

    async def ContainerStatus(  # noqa: N802
        self, request: pb.ContainerStatusRequest, context: _Ctx
    ) -> pb.ContainerStatusResponse:
        async with aborting_on_error(context):
            c = self.cri.containers.get(request.container_id)
        resp = pb.ContainerStatusResponse(status=_container_status(c))
        if request.verbose:
            resp.info["info"] = json.dumps(
                {"pid": c.pid, "sandboxID": c.sandbox_id, "runtimeSpec": json.loads(c.spec)}
            )
        return resp

    async def ExecSync(self, request: pb.ExecSyncRequest, context: _Ctx) -> pb.ExecSyncResponse:  # noqa: N802
        async with aborting_on_error(context):
            stdout, stderr, code = await self.cri.containers.exec_sync(
                request.container_id, list(request.cmd), float(request.timeout)
            )
        return pb.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=code)

    async def ContainerStats(  # noqa: N802
        self, request: pb.ContainerStatsRequest, context: _Ctx
    ) -> pb.ContainerStatsResponse:
        async with aborting_on_error(context):
            c = self.cri.containers.get(request.container_id)
            stats = await self._stats(c, _cgroups_of(c))
        return pb.ContainerStatsResponse(stats=stats)

    async def ListContainerStats(  # noqa: N802
        self, request: pb.ListContainerStatsRequest, context: _Ctx
    ) -> pb.ListContainerStatsResponse:
        f = request.filter
        found = self.cri.containers.select(
            cid=f.id, sandbox_id=f.pod_sandbox_id, labels=dict(f.label_selector)
        )
        async with aborting_on_error(context):
            stats = [await self._stats(c, _cgroups_of(c)) for c in found]
        return pb.ListContainerStatsResponse(stats=stats)

    async def _stats(self, c: CriContainer, cgroups: str) -> pb.ContainerStats:
        """``c``'s usage, read from its cgroup ``cgroups`` (its spec's ``cgroupsPath``)."""
        usage = await asyncio.to_thread(read_usage, cgroups)
        now = time.time_ns()
        out = pb.ContainerStats(
            attributes=pb.ContainerAttributes(
                id=c.id,
                metadata=_container_metadata(c),
                labels=c.labels,
                annotations=c.annotations,
            )
        )
        out.cpu.timestamp = now
        if usage.cpu_ns is not None:
            out.cpu.usage_core_nano_seconds.value = usage.cpu_ns
        out.memory.timestamp = now
        if usage.working_set_bytes is not None:
            out.memory.working_set_bytes.value = usage.working_set_bytes
        if usage.memory_bytes is not None:
            out.memory.usage_bytes.value = usage.memory_bytes
        out.writable_layer.timestamp = now
        out.writable_layer.fs_id.mountpoint = str(self.cri.image_fs)
        return out

    async def PodSandboxStats(  # noqa: N802
        self, request: pb.PodSandboxStatsRequest, context: _Ctx
    ) -> pb.PodSandboxStatsResponse:
        async with aborting_on_error(context):
            sb = self.cri.sandboxes.get(request.pod_sandbox_id)
            stats = await self._pod_stats(sb)
        return pb.PodSandboxStatsResponse(stats=stats)

    async def ListPodSandboxStats(  # noqa: N802
        self, request: pb.ListPodSandboxStatsRequest, context: _Ctx
    ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        found = self.cri.sandboxes.select(sid=f.id, labels=dict(f.label_selector))
        async with aborting_on_error(context):
            stats = [await self._pod_stats(sb) for sb in found]
        return pb.ListPodSandboxStatsResponse(stats=stats)

    async def _pod_stats(self, sb: PodSandbox) -> pb.PodSandboxStats:
        """The pod's usage: its cgroup parent's when it has one, else the sum of its parts."""
        running = [
            c
            for c in self.cri.containers.select(sandbox_id=sb.id)
            if c.state == "CONTAINER_RUNNING"
        ]
        paths = [_cgroups_of(c) for c in running]
        containers = [await self._stats(c, path) for c, path in zip(running, paths, strict=True)]
        parent = str((sb.config.get("linux") or {}).get("cgroup_parent") or "")
        if parent and self.cri.config.cgroup_driver == "cgroupfs":
            pod = await asyncio.to_thread(read_usage, parent)
        else:
            pause = await asyncio.to_thread(read_usage, cgroups_path(parent, sb.id, systemd=False))
            parts = [pause.cpu_ns, *(c.cpu.usage_core_nano_seconds.value for c in containers)]
            mems = [pause.memory_bytes, *(c.memory.usage_bytes.value for c in containers)]
            sets = [
                pause.working_set_bytes,
                *(c.memory.working_set_bytes.value for c in containers),
            ]
            pod = Usage(
                cpu_ns=sum(p or 0 for p in parts),
                memory_bytes=sum(m or 0 for m in mems),
                working_set_bytes=sum(w or 0 for w in sets),
            )
        now = time.time_ns()
        out = pb.PodSandboxStats(
            attributes=pb.PodSandboxAttributes(
                id=sb.id,
                metadata=_sandbox_metadata(sb),
                labels=sb.labels,
                annotations=sb.annotations,
            )
        )
        out.linux.cpu.timestamp = now
        if pod.cpu_ns is not None:
            out.linux.cpu.usage_core_nano_seconds.value = pod.cpu_ns
        out.linux.memory.timestamp = now
        if pod.memory_bytes is not None:
            out.linux.memory.usage_bytes.value = pod.memory_bytes
        if pod.working_set_bytes is not None:
            out.linux.memory.working_set_bytes.value = pod.working_set_bytes
        out.linux.containers.extend(containers)
        # upstream counts the processes of the pod's running containers (the pause one not)
        counts = await asyncio.to_thread(lambda: [process_count(path) for path in paths])
        out.linux.process.timestamp = now
        out.linux.process.process_count.value = sum(n or 0 for n in counts)
        if sb.pid and not sb.host_network:
            interfaces = await asyncio.to_thread(read_net_dev, sb.pid)
            out.linux.network.timestamp = now
            for usage in interfaces:
                item = (
                    out.linux.network.default_interface
                    if usage.name == DEFAULT_IFNAME
                    else out.linux.network.interfaces.add()
                )
                item.name = usage.name
                item.rx_bytes.value = usage.rx_bytes
                item.rx_errors.value = usage.rx_errors
                item.tx_bytes.value = usage.tx_bytes
                item.tx_errors.value = usage.tx_errors
        return out

    async def ReopenContainerLog(  # noqa: N802
        self, request: pb.ReopenContainerLogRequest, context: _Ctx
    ) -> pb.ReopenContainerLogResponse:
        async with aborting_on_error(context):
            self.cri.containers.reopen_log(request.container_id)
        return pb.ReopenContainerLogResponse()

    async def UpdateContainerResources(  # noqa: N802
        self, request: pb.UpdateContainerResourcesRequest, context: _Ctx
    ) -> pb.UpdateContainerResourcesResponse:
        async with aborting_on_error(context):
            await self.cri.containers.update_resources(
                request.container_id, _to_dict(request.linux)
            )
        return pb.UpdateContainerResourcesResponse()

    async def GetContainerEvents(  # noqa: N802
        self, request: pb.GetEventsRequest, context: _Ctx
    ) -> AsyncIterator[pb.ContainerEventResponse]:
        queue: asyncio.Queue[pb.ContainerEventResponse] = asyncio.Queue()
        self.cri.subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.cri.subscribers.discard(queue)

    # -- streaming (pycontainerd.cri.streaming_handler) ---------------------------------

    async def Exec(self, request: pb.ExecRequest, context: _Ctx) -> pb.ExecResponse:  # noqa: N802
        from pycontainerd.cri.streaming_handler import exec_url

        async with aborting_on_error(context):
            url = exec_url(
                self.cri.streaming_server(),
                self.cri.containers,
                container_id=request.container_id,
                cmd=list(request.cmd),
                tty=request.tty,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
            )
        return pb.ExecResponse(url=url)

    async def Attach(self, request: pb.AttachRequest, context: _Ctx) -> pb.AttachResponse:  # noqa: N802
        from pycontainerd.cri.streaming_handler import attach_url

        async with aborting_on_error(context):
            url = attach_url(
                self.cri.streaming_server(),
                self.cri.containers,
                container_id=request.container_id,
                tty=request.tty,
                stdin=request.stdin,
                stdout=request.stdout,
                stderr=request.stderr,
            )
        return pb.AttachResponse(url=url)

    async def PortForward(  # noqa: N802
        self, request: pb.PortForwardRequest, context: _Ctx
    ) -> pb.PortForwardResponse:
        from pycontainerd.cri.streaming_handler import portforward_url

        async with aborting_on_error(context):
            url = portforward_url(
                self.cri.streaming_server(),
                self.cri.sandboxes,
                sandbox_id=request.pod_sandbox_id,
                ports=list(request.port),
            )
        return pb.PortForwardResponse(url=url)


def _image_to_proto(img: CriImage) -> pb.Image:
    out = pb.Image(
        id=img.id,
        repo_tags=img.repo_tags,
        repo_digests=img.repo_digests,
        size=img.size,
        username=img.username,
        spec=pb.ImageSpec(image=img.id),
        pinned=img.pinned,
    )
    if img.uid is not None:
        out.uid.value = img.uid
    return out


class ImageService(pb_grpc.ImageServiceServicer):
    """``runtime.v1.ImageService``: pull, list, status and removal of the ``k8s.io`` images."""

    def __init__(self, cri: CriService) -> None:
        self.cri = cri

    async def PullImage(  # noqa: N802
        self, request: pb.PullImageRequest, context: _Ctx
    ) -> pb.PullImageResponse:
        from pycontainerd.cri.pull import credentials

        puller = self.cri.sandboxes.puller
        if puller is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "PullImage: no transfer plugin")
            raise AssertionError
        a = request.auth
        async with aborting_on_error(context):
            auth = credentials(a.username, a.password, a.auth)
            image_id = await puller.pull(request.image.image, auth)
        return pb.PullImageResponse(image_ref=image_id)

    async def ListImages(  # noqa: N802
        self, request: pb.ListImagesRequest, context: _Ctx
    ) -> pb.ListImagesResponse:
        async with aborting_on_error(context):
            if request.filter.image.image:
                found = await self.cri.catalog.find(request.filter.image.image)
                images = [found] if found is not None else []
            else:
                images = await self.cri.catalog.list()
        return pb.ListImagesResponse(images=[_image_to_proto(i) for i in images])

    async def ImageStatus(  # noqa: N802
        self, request: pb.ImageStatusRequest, context: _Ctx
    ) -> pb.ImageStatusResponse:
        async with aborting_on_error(context):
            img = await self.cri.catalog.find(request.image.image)
        if img is None:
            return pb.ImageStatusResponse()
        resp = pb.ImageStatusResponse(image=_image_to_proto(img))
        if request.verbose:
            resp.info["info"] = json.dumps({"imageSpec": img.config})
        return resp

    async def ImageFsInfo(  # noqa: N802
        self, request: pb.ImageFsInfoRequest, context: _Ctx
    ) -> pb.ImageFsInfoResponse:
        root = self.cri.image_fs
        async with aborting_on_error(context):
            used, inodes = await asyncio.to_thread(disk_usage, root)
        usage = pb.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=pb.FilesystemIdentifier(mountpoint=str(root)),
            used_bytes=pb.UInt64Value(value=used),
            inodes_used=pb.UInt64Value(value=inodes),
        )
        return pb.ImageFsInfoResponse(image_filesystems=[usage], container_filesystems=[usage])

    async def RemoveImage(  # noqa: N802
        self, request: pb.RemoveImageRequest, context: _Ctx
    ) -> pb.RemoveImageResponse:
        async with aborting_on_error(context):
            await self.cri.catalog.remove(request.image.image)
        return pb.RemoveImageResponse()


def _not_built(service: str, method: str) -> Any:
    async def handler(self: object, request: object, context: _Ctx) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{service}.{method} is not implemented yet in pycontainerd-cri",
        )

    handler.__name__ = method
    return handler


def _fill_unimplemented() -> None:
    for cls, name in ((RuntimeService, "RuntimeService"), (ImageService, "ImageService")):
        for method in pb.DESCRIPTOR.services_by_name[name].methods_by_name:
            if method not in cls.__dict__:
                setattr(cls, method, _not_built(name, method))


_fill_unimplemented()
