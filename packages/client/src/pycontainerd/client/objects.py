"""The objects of the client facade: images, containers, tasks, processes, events.

Like containerd's Go client, :class:`~pycontainerd.client.client.Client`
hands out objects bound to it (``client.pull(...)`` is an :class:`Image`,
``client.new_container(...)`` a :class:`Container`, ``container.new_task()``
a :class:`Task`), whose methods are the next steps. They are thin: each
holds a record (plain dataclasses from ``pycontainerd.core``, never
protobuf messages) and calls the lower-level functions of this package
(:mod:`~pycontainerd.client.containers`, :mod:`~pycontainerd.client.tasks`,
:mod:`~pycontainerd.client.unpack`).
"""

from __future__ import annotations

import contextlib
import signal as signals
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycontainerd.client.containers import (
    container_spec,
    delete_container,
    ensure_unpacked,
    image_config,
    image_manifest,
)
from pycontainerd.client.stdio import ProcessIO
from pycontainerd.client.tasks import Task as _LowTask
from pycontainerd.client.tasks import TaskService, exec_process, load_task, new_task
from pycontainerd.core import platforms as platforms_mod
from pycontainerd.core.errdefs import FailedPreconditionError, NotFoundError, UnimplementedError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping, Sequence
    from datetime import datetime

    from pycontainerd.client.containers import ImageConfig
    from pycontainerd.client.proxies import Services
    from pycontainerd.client.stdio import Output, Stdio
    from pycontainerd.client.tasks import ExitStatus, Metric, ProcessState
    from pycontainerd.core import containers, images
    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.types import AnyValue, Descriptor


def parse_platform(platform: str | Platform | None) -> Platform | None:
    """``"linux/amd64"`` or a ``Platform`` (``None`` stays ``None``: the host's)."""
    if platform is None or not isinstance(platform, str):
        return platform
    return platforms_mod.parse(platform)


class Image:
    """An image record with the client it came from (containerd's ``Image``)."""

    def __init__(self, client: Services, record: images.Image) -> None:
        self.client = client
        self.record = record

    @property
    def name(self) -> str:
        """The image's name, e.g. ``docker.io/library/busybox:latest``."""
        return self.record.name

    @property
    def target(self) -> Descriptor:
        """The descriptor of its manifest or index."""
        return self.record.target

    @property
    def labels(self) -> Mapping[str, str]:
        """Its labels."""
        return self.record.labels

    @property
    def created_at(self) -> datetime:
        """When it was created."""
        return self.record.created_at

    @property
    def updated_at(self) -> datetime:
        """When it was last updated."""
        return self.record.updated_at

    def __repr__(self) -> str:
        return f"Image(name={self.name!r}, digest={self.target.digest!r})"

    async def manifest(self, platform: str | Platform | None = None) -> Descriptor:
        """The manifest for ``platform`` (default: this host), through indexes."""
        return await image_manifest(self.client, self.record, parse_platform(platform))

    async def config(self, platform: str | Platform | None = None) -> ImageConfig:
        """Env, entrypoint, command, user, layers of its config for ``platform``."""
        return await image_config(self.client, await self.manifest(platform))

    async def unpack(
        self, snapshotter: str | None = None, platform: str | Platform | None = None
    ) -> str:
        """Unpack it into ``snapshotter`` unless it is there; return the top chain ID."""
        manifest = await self.manifest(platform)
        config = await image_config(self.client, manifest)
        return await ensure_unpacked(
            self.client, manifest, config, snapshotter or self.client.snapshotter
        )

    async def is_unpacked(
        self, snapshotter: str | None = None, platform: str | Platform | None = None
    ) -> bool:
        """Whether its top layer is in ``snapshotter``."""
        config = await self.config(platform)
        if not config.chain_id:
            return False
        try:
            await self.client.snapshot_service(snapshotter).stat(config.chain_id)
        except NotFoundError:
            return False
        return True

    async def delete(self, *, sync: bool = False) -> None:
        """Delete the record (``sync``: wait for the collection of what it held)."""
        await self.client.image_store().delete(self.name, sync=sync)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessInfo:
    """One process of a task (``Tasks.ListPids``)."""

    pid: int
    info: AnyValue | None = None


class Process:
    """A process of a task: its init process (a :class:`Task`) or an exec."""

    def __init__(self, client: Services, low: _LowTask, io: ProcessIO) -> None:
        self.client = client
        self._low = low
        self._io = io

    @property
    def container_id(self) -> str:
        """The container the process belongs to."""
        return self._low.container_id

    @property
    def id(self) -> str:
        """The exec id, or the container id for the init process."""
        return self._low.id

    @property
    def pid(self) -> int:
        """The host pid (0 before it was created or started)."""
        return self._low.pid

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, pid={self.pid})"

    async def start(self) -> int:
        """Start it; return its pid. Stdin (when given) is fed from now on."""
        pid = await self._low.start()
        self._io.start_input()
        return pid

    async def wait(self) -> ExitStatus:
        """Block until it exits; how it ended."""
        return await self._low.wait()

    async def kill(self, signal: int = signals.SIGTERM, *, all: bool = False) -> None:
        """Send ``signal`` (``all``: to every process of the task)."""
        await self._low.kill(int(signal), all=all)

    async def status(self) -> ProcessState:
        """Its state (``RUNNING``, ``STOPPED``, ...), pid and exit status."""
        return await self._low.state()

    async def close_stdin(self) -> None:
        """Close its stdin (end-of-file for the process)."""
        await self._low.close_io()

    async def resize(self, width: int, height: int) -> None:
        """Resize its terminal."""
        await self._low.resize(width, height)

    def output(self, stream: str = "stdout") -> AsyncIterator[bytes]:
        """Its captured ``stdout`` or ``stderr``, chunk by chunk as it comes, to end-of-file.

        Raises:
            InvalidArgumentError: the stream is not captured (see ``Stdio.capture``).
        """
        return self._io.stream(stream)

    async def read_output(self) -> Output:
        """All its captured output, once it closed its streams."""
        return await self._io.read()

    async def delete(self, *, force: bool = False) -> ExitStatus:
        """Delete it (``force``: kill and wait first); its FIFOs are removed.

        Raises:
            FailedPreconditionError: it is still running and ``force`` is not given.
        """
        status = await self._low.delete(force=force)
        await self._io.close()
        return status


class Task(Process):
    """A container's running task (containerd's ``Task``): its init process and the rest."""

    def __init__(
        self, client: Services, container: Container, low: _LowTask, io: ProcessIO
    ) -> None:
        super().__init__(client, low, io)
        self.container = container

    async def pause(self) -> None:
        """Freeze every process of the task."""
        await self._low.service.pause(self.container_id)

    async def resume(self) -> None:
        """Thaw it."""
        await self._low.service.resume(self.container_id)

    async def exec(
        self,
        exec_id: str,
        args: Sequence[str],
        *,
        stdio: Stdio | None = None,
        env: Sequence[str] = (),
        cwd: str = "",
        process: Mapping[str, Any] | None = None,
    ) -> Process:
        """Add the process ``args`` as ``exec_id`` (not started: call ``start()``).

        It runs with the container's process settings (user, environment,
        capabilities), ``env`` added and ``cwd`` changed when given; or
        exactly ``process`` (an OCI ``Process``) when given.
        """
        if process is None:
            spec = await self.container.spec()
            proc = dict(spec.get("process") or {})
            proc["args"] = list(args)
            if env:
                proc["env"] = [*proc.get("env", []), *env]
            if cwd:
                proc["cwd"] = cwd
        else:
            proc = dict(process)
        io = ProcessIO(exec_id, stdio)
        proc["terminal"] = io.stdio.terminal
        io.start_output()
        try:
            low = await exec_process(self.client, self.container_id, exec_id, proc, io.fifos)
        except BaseException:
            await io.close(grace=0)
            raise
        return Process(self.client, low, io)

    async def pids(self) -> list[ProcessInfo]:
        """The host pids of its processes."""
        found = await self._low.service.pids(self.container_id)
        return [ProcessInfo(pid=pid, info=info) for pid, info in found]

    async def metrics(self) -> Metric:
        """One metrics sample (runtime-specific data, e.g. cgroup statistics).

        Raises:
            NotFoundError: the task is gone.
        """
        found = await self._low.service.metrics(f"id=={self.container_id}")
        if not found:
            msg = f"no metrics for task {self.container_id}: not found"
            raise NotFoundError(msg)
        return found[0]


class Container:
    """A container record with the client it came from (containerd's ``Container``)."""

    def __init__(self, client: Services, record: containers.Container) -> None:
        self.client = client
        self.record = record

    @property
    def id(self) -> str:
        """The container's id."""
        return self.record.id

    @property
    def image_name(self) -> str:
        """The name of the image it was made from ("" for none)."""
        return self.record.image

    @property
    def labels(self) -> Mapping[str, str]:
        """Its labels."""
        return self.record.labels

    @property
    def runtime(self) -> str:
        """The runtime that runs its tasks, e.g. ``io.containerd.runc.v2``."""
        return self.record.runtime.name

    @property
    def snapshotter(self) -> str:
        """The snapshotter holding its root filesystem ("" for a host directory)."""
        return self.record.snapshotter

    @property
    def snapshot_key(self) -> str:
        """The key of its snapshot ("" for none)."""
        return self.record.snapshot_key

    @property
    def created_at(self) -> datetime:
        """When it was created."""
        return self.record.created_at

    def __repr__(self) -> str:
        return f"Container(id={self.id!r}, image={self.image_name!r})"

    async def refresh(self) -> Container:
        """Re-read the record from the daemon; returns ``self``."""
        self.record = await self.client.container_store().get(self.id)
        return self

    async def spec(self) -> dict[str, Any]:
        """Its OCI runtime spec."""
        return container_spec(self.record)

    async def image(self) -> Image:
        """The image it was made from.

        Raises:
            NotFoundError: it has none, or the image is gone.
        """
        if not self.image_name:
            msg = f"container {self.id!r} has no image: not found"
            raise NotFoundError(msg)
        return Image(self.client, await self.client.image_store().get(self.image_name))

    async def set_labels(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        """Set (or, with an empty value, remove) labels; return all of them."""
        from dataclasses import replace

        merged = {**self.record.labels, **labels}
        merged = {k: v for k, v in merged.items() if v}
        paths = [f"labels.{k}" for k in labels]
        self.record = await self.client.container_store().update(
            replace(self.record, labels=merged), *paths
        )
        return self.record.labels

    async def new_task(
        self, stdio: Stdio | None = None, *, options: AnyValue | None = None
    ) -> Task:
        """Create its task (not started: call ``start()``), stdio connected as ``stdio``."""
        io = ProcessIO(self.id, stdio)
        io.start_output()
        try:
            low = await new_task(self.client, self.record, io.fifos, options=options)
        except BaseException:
            await io.close(grace=0)
            raise
        return Task(self.client, self, low, io)

    async def task(self) -> Task:
        """Its existing task (without stdio of this client).

        Raises:
            NotFoundError: ``no running task found: ...``.
        """
        low = await load_task(self.client, self.id)
        return Task(self.client, self, low, ProcessIO(self.id, None))

    async def delete(self, *, cleanup_snapshot: bool = True) -> None:
        """Delete the record and, with ``cleanup_snapshot``, its snapshot.

        Raises:
            FailedPreconditionError: it still has a task (delete that first).
        """
        # As the Go client: only a task that answers blocks the delete (a
        # daemon without the Tasks service has none).
        with contextlib.suppress(NotFoundError, UnimplementedError):
            await TaskService(self.client).get(self.id)
            msg = f"cannot delete running task {self.id}"
            raise FailedPreconditionError(msg)
        await delete_container(self.client, self.id, snapshot_cleanup=cleanup_snapshot)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """An event from ``client.subscribe()``.

    Attributes:
        timestamp: when it was published (UTC).
        namespace: the namespace it happened in.
        topic: e.g. ``/tasks/exit``, ``/images/create``.
        type_url: the payload's type, e.g. ``containerd.events.TaskExit``.
        fields: the payload's fields by their proto names (``container_id``,
            ``exit_status``...); empty for a type this client does not know.
    """

    timestamp: datetime
    namespace: str
    topic: str
    type_url: str
    fields: Mapping[str, Any] = field(default_factory=dict)
