"""The synchronous twin of the client: the same names, no ``await``.

For scripts and notebooks::

    from pycontainerd.client.sync import Client, Stdio

    with Client() as client:
        image = client.pull("docker.io/library/busybox:latest")
        container = client.new_container("demo", image, args=["echo", "hi"])
        task = container.new_task(Stdio.capture())
        task.start()
        print(task.wait().code, task.read_output().stdout)
        task.delete()
        container.delete()

Each sync ``Client`` runs an asynchronous :class:`pycontainerd.client.client.Client`
on an event loop in a private daemon thread; a call hands its coroutine to
that loop and blocks until it is done. ``version()``, a single unary call,
skips the loop: it runs in the calling thread on a blocking gRPC channel
dialled like the async one (same address, TLS and headers). Any number of threads may call one
client at once (their calls run concurrently on its loop). A call carries
the caller's context: ``pycontainerd.core.namespaces.with_namespace`` and
:meth:`Client.with_lease` in one thread apply to that thread's calls only.
Async iterators (``subscribe``, ``output``, ``content_store().walk()``)
become ordinary iterators. Objects (:class:`Image`, :class:`Container`,
:class:`Task`, :class:`Process`) wrap their async counterparts, reachable as
``.aio``. The proxies (``content_store()``, ``lease_manager()``...) are
wrapped generically: every coroutine method blocks, every async iterator
iterates.

Calling the sync client from inside its own loop (for example from a
``progress`` callback) would wait for itself and raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any, TypeVar

import grpc

from pycontainerd.client._errors import rpc_errors
from pycontainerd.client.client import DEFAULT_LEASE_EXPIRY, Version, generate_lease_id
from pycontainerd.client.client import Client as AsyncClient
from pycontainerd.core import namespaces
from pycontainerd.core.leases import EXPIRE_LABEL

if TYPE_CHECKING:
    import os
    import signal as signals
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
    from datetime import timedelta
    from types import TracebackType

    from pycontainerd.client.address import TLSConfig
    from pycontainerd.client.containers import ImageConfig
    from pycontainerd.client.facade import Subscription as AsyncSubscription
    from pycontainerd.client.objects import Container as AsyncContainer
    from pycontainerd.client.objects import Event, ProcessInfo
    from pycontainerd.client.objects import Image as AsyncImage
    from pycontainerd.client.objects import Process as AsyncProcess
    from pycontainerd.client.objects import Task as AsyncTask
    from pycontainerd.client.oci import SpecOpt
    from pycontainerd.client.progress import Job
    from pycontainerd.client.proxies.introspection import ServerInfo
    from pycontainerd.client.remotes.resolver import Resolver
    from pycontainerd.client.stdio import Output, Stdio
    from pycontainerd.client.tasks import ExitStatus, Metric, ProcessState
    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.types import AnyValue, Descriptor

__all__ = [
    "Client",
    "Container",
    "Event",
    "Image",
    "Output",
    "Process",
    "ProcessInfo",
    "Stdio",
    "Subscription",
    "Task",
    "Version",
]

T = TypeVar("T")


def __getattr__(name: str) -> Any:
    # Re-exported types, imported when first used (objects brings the Tasks stubs).
    if name in {"Event", "ProcessInfo"}:
        from pycontainerd.client import objects

        return getattr(objects, name)
    if name in {"Output", "Stdio"}:
        from pycontainerd.client import stdio

        return getattr(stdio, name)
    raise AttributeError(name)


class _Loop:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="pycontainerd-client", daemon=True
        )
        self.thread.start()

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` on the loop in the caller's context; block for its result.

        The caller waits on a plain lock the loop releases when the work is
        done (cheaper than a ``concurrent.futures.Future``'s condition).
        """
        if threading.current_thread() is self.thread:
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never awaited, on purpose
            self.refuse_own_thread()
        context = contextvars.copy_context()
        finished = threading.Lock()
        finished.acquire()
        outcome: list[asyncio.Future[T]] = []

        def settle(task: asyncio.Future[T]) -> None:
            finished.release()

        def start() -> None:
            try:
                task: asyncio.Future[T] = asyncio.ensure_future(awaitable, loop=self.loop)
            except BaseException as exc:  # not awaitable: fail the call, not the loop
                failed = self.loop.create_future()
                failed.set_exception(exc)
                task = failed
            outcome.append(task)
            task.add_done_callback(settle)

        self.loop.call_soon_threadsafe(context.run, start)
        try:
            finished.acquire()
        except BaseException:  # interrupted (KeyboardInterrupt): stop the work
            self.loop.call_soon_threadsafe(lambda: outcome and outcome[0].cancel())
            raise
        task = outcome[0]
        if task.cancelled():
            raise asyncio.CancelledError
        return task.result()

    def refuse_own_thread(self) -> None:
        """Raise ``RuntimeError`` when called from the loop's thread (it would wait for itself)."""
        if threading.current_thread() is self.thread:
            msg = "the sync client was called from its own event loop: use the async client there"
            raise RuntimeError(msg)

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """``iterator`` as a blocking iterator; closing it closes the async one."""
        try:
            while True:
                try:
                    item = self.run(anext(iterator))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not self.loop.is_closed():
                with contextlib.suppress(Exception):
                    self.run(aclose())

    def stop(self) -> None:
        """Stop the loop and its thread (after the client is closed)."""
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Blocking:
    """Any async object made blocking: coroutine methods block, async iterators iterate.

    What ``content_store()``, ``lease_manager()``, ``snapshot_service()`` and
    the other proxies of the async client return, wrapped.
    """

    __slots__ = ("_loop", "aio")

    def __init__(self, loop: _Loop, target: object) -> None:
        self._loop = loop
        self.aio = target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.aio, name)
        if not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop_result(value(*args, **kwargs))

        call.__name__ = name
        call.__doc__ = getattr(value, "__doc__", None)
        return call

    def _loop_result(self, result: object) -> Any:
        if inspect.isawaitable(result):
            result = self._loop.run(result)
        if hasattr(result, "__anext__"):
            return self._loop.iterate(result)  # type: ignore[arg-type]
        if hasattr(result, "__aenter__"):
            return _BlockingContext(self._loop, result)
        if _wants_wrapping(result):
            return Blocking(self._loop, result)
        return result

    def __repr__(self) -> str:
        return f"Blocking({self.aio!r})"


def _wants_wrapping(value: object) -> bool:
    """Objects with coroutine methods (writers, readers) are wrapped too."""
    return any(
        inspect.iscoroutinefunction(getattr(type(value), n, None))
        for n in ("read_at", "write", "commit", "close", "stream")
    )


class _BlockingContext:
    def __init__(self, loop: _Loop, target: Any) -> None:
        self._loop = loop
        self._target = target

    def __enter__(self) -> Any:
        return self._loop.run(self._target.__aenter__())

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return self._loop.run(self._target.__aexit__(exc_type, exc, tb))  # type: ignore[no-any-return]


class Image:
    """The sync twin of :class:`pycontainerd.client.objects.Image`."""

    def __init__(self, loop: _Loop, aio: AsyncImage) -> None:
        self._loop = loop
        self.aio = aio

    name = property(lambda self: self.aio.name, doc="The image's name.")
    target = property(lambda self: self.aio.target, doc="Its manifest or index descriptor.")
    labels = property(lambda self: self.aio.labels, doc="Its labels.")
    created_at = property(lambda self: self.aio.created_at, doc="When it was created.")

    def __repr__(self) -> str:
        return repr(self.aio)

    def manifest(self, platform: str | Platform | None = None) -> Descriptor:
        """See :meth:`pycontainerd.client.objects.Image.manifest`."""
        return self._loop.run(self.aio.manifest(platform))

    def config(self, platform: str | Platform | None = None) -> ImageConfig:
        """See :meth:`pycontainerd.client.objects.Image.config`."""
        return self._loop.run(self.aio.config(platform))

    def unpack(self, snapshotter: str | None = None, platform: str | Platform | None = None) -> str:
        """See :meth:`pycontainerd.client.objects.Image.unpack`."""
        return self._loop.run(self.aio.unpack(snapshotter, platform))

    def is_unpacked(
        self, snapshotter: str | None = None, platform: str | Platform | None = None
    ) -> bool:
        """See :meth:`pycontainerd.client.objects.Image.is_unpacked`."""
        return self._loop.run(self.aio.is_unpacked(snapshotter, platform))

    def delete(self, *, sync: bool = False) -> None:
        """See :meth:`pycontainerd.client.objects.Image.delete`."""
        self._loop.run(self.aio.delete(sync=sync))


class Process:
    """The sync twin of :class:`pycontainerd.client.objects.Process`."""

    def __init__(self, loop: _Loop, aio: AsyncProcess) -> None:
        self._loop = loop
        self.aio = aio

    @property
    def id(self) -> str:
        """The exec id, or the container id for a task."""
        return self.aio.id

    @property
    def container_id(self) -> str:
        """The container it belongs to."""
        return self.aio.container_id

    @property
    def pid(self) -> int:
        """The host pid."""
        return self.aio.pid

    def __repr__(self) -> str:
        return repr(self.aio)

    def start(self) -> int:
        """Start it; return its pid."""
        return self._loop.run(self.aio.start())

    def wait(self) -> ExitStatus:
        """Block until it exits."""
        return self._loop.run(self.aio.wait())

    def kill(self, signal: int | signals.Signals = 15, *, all: bool = False) -> None:
        """Send ``signal`` (default SIGTERM)."""
        self._loop.run(self.aio.kill(int(signal), all=all))

    def status(self) -> ProcessState:
        """Its state."""
        return self._loop.run(self.aio.status())

    def close_stdin(self) -> None:
        """Close its stdin."""
        self._loop.run(self.aio.close_stdin())

    def resize(self, width: int, height: int) -> None:
        """Resize its terminal."""
        self._loop.run(self.aio.resize(width, height))

    def output(self, stream: str = "stdout") -> Iterator[bytes]:
        """Its captured output chunk by chunk (see ``Stdio.capture``)."""
        return self._loop.iterate(self.aio.output(stream))

    def read_output(self) -> Output:
        """All its captured output once it ends."""
        return self._loop.run(self.aio.read_output())

    def delete(self, *, force: bool = False) -> ExitStatus:
        """Delete it (``force``: kill it first)."""
        return self._loop.run(self.aio.delete(force=force))


class Task(Process):
    """The sync twin of :class:`pycontainerd.client.objects.Task`."""

    aio: AsyncTask

    def __init__(self, loop: _Loop, aio: AsyncTask) -> None:
        super().__init__(loop, aio)

    def pause(self) -> None:
        """Freeze it."""
        self._loop.run(self.aio.pause())

    def resume(self) -> None:
        """Thaw it."""
        self._loop.run(self.aio.resume())

    def exec(
        self,
        exec_id: str,
        args: Sequence[str],
        *,
        stdio: Stdio | None = None,
        env: Sequence[str] = (),
        cwd: str = "",
        process: Mapping[str, Any] | None = None,
    ) -> Process:
        """Add a process (not started); see :meth:`pycontainerd.client.objects.Task.exec`."""
        aio = self._loop.run(
            self.aio.exec(exec_id, args, stdio=stdio, env=env, cwd=cwd, process=process)
        )
        return Process(self._loop, aio)

    def pids(self) -> list[ProcessInfo]:
        """Its processes' host pids."""
        return self._loop.run(self.aio.pids())

    def metrics(self) -> Metric:
        """One metrics sample."""
        return self._loop.run(self.aio.metrics())


class Container:
    """The sync twin of :class:`pycontainerd.client.objects.Container`."""

    def __init__(self, loop: _Loop, aio: AsyncContainer) -> None:
        self._loop = loop
        self.aio = aio

    @property
    def id(self) -> str:
        """The container's id."""
        return self.aio.id

    @property
    def image_name(self) -> str:
        """The image it was made from."""
        return self.aio.image_name

    @property
    def labels(self) -> Mapping[str, str]:
        """Its labels."""
        return self.aio.labels

    @property
    def runtime(self) -> str:
        """Its runtime."""
        return self.aio.runtime

    @property
    def created_at(self) -> datetime:
        """When it was created."""
        return self.aio.created_at

    def __repr__(self) -> str:
        return repr(self.aio)

    def refresh(self) -> Container:
        """Re-read its record."""
        self._loop.run(self.aio.refresh())
        return self

    def spec(self) -> dict[str, Any]:
        """Its OCI spec."""
        return self._loop.run(self.aio.spec())

    def image(self) -> Image:
        """The image it was made from."""
        return Image(self._loop, self._loop.run(self.aio.image()))

    def set_labels(self, labels: Mapping[str, str]) -> Mapping[str, str]:
        """Set or remove labels; return all."""
        return self._loop.run(self.aio.set_labels(labels))

    def new_task(self, stdio: Stdio | None = None, *, options: AnyValue | None = None) -> Task:
        """Create its task (not started)."""
        return Task(self._loop, self._loop.run(self.aio.new_task(stdio, options=options)))

    def task(self) -> Task:
        """Its existing task."""
        return Task(self._loop, self._loop.run(self.aio.task()))

    def delete(self, *, cleanup_snapshot: bool = True) -> None:
        """Delete it (and its snapshot)."""
        self._loop.run(self.aio.delete(cleanup_snapshot=cleanup_snapshot))


class Client:
    """The sync twin of :class:`pycontainerd.client.client.Client` (same arguments).

    ``with Client(...) as client`` waits for the daemon (``connect_timeout``)
    and, on exit, closes the channel and stops the loop thread; so does
    :meth:`close`.
    """

    def __init__(
        self,
        address: str | None = None,
        namespace: str | None = None,
        *,
        timeout: float | None = None,
        connect_timeout: float | str | None = None,
        lease: str | None = None,
        snapshotter: str | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        self.aio = AsyncClient(
            address,
            namespace,
            timeout=timeout,
            connect_timeout=connect_timeout,
            lease=lease,
            snapshotter=snapshotter,
            tls=tls,
        )
        self._loop = _Loop()
        self._blocking: grpc.Channel | None = None
        self._blocking_lock = threading.Lock()
        self._version: tuple[Callable[..., Any], object] | None = None

    @property
    def address(self) -> str:
        """The address dialled (a socket path or ``tcp://host:port``)."""
        return self.aio.address

    @property
    def namespace(self) -> str:
        """The default namespace."""
        return self.aio.namespace

    def connect(self) -> None:
        """Wait until the daemon answers (see the async client's ``connect``)."""
        self._loop.run(self.aio.connect())

    def close(self) -> None:
        """Close the channels and stop the loop thread; the client cannot be used after."""
        with self._blocking_lock:
            blocking, self._blocking, self._version = self._blocking, None, None
        if blocking is not None:
            blocking.close()
        if not self._loop.loop.is_closed():
            self._loop.run(self.aio.close())
            self._loop.stop()

    def _blocking_channel(self) -> grpc.Channel:
        """A blocking channel dialled as the async client's, for single unary calls.

        A call on it runs in the calling thread (no hop to the loop thread);
        it carries the same headers (this thread's namespace and lease).
        """
        with self._blocking_lock:
            if self._blocking is None:
                if self._loop.loop.is_closed():
                    msg = "the client is closed"
                    raise RuntimeError(msg)
                target, options, credentials = self.aio.channel_arguments()
                if credentials is None:
                    self._blocking = grpc.insecure_channel(target, options=options)
                else:
                    self._blocking = grpc.secure_channel(target, credentials, options=options)
            return self._blocking

    def __enter__(self) -> Client:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.loop.is_closed():
            loop.loop.call_soon_threadsafe(loop.loop.stop)

    # -- small services and proxies -------------------------------------------------------

    def version(self) -> Version:
        """The daemon's version and revision (a call in this thread, no loop hop)."""
        self._loop.refuse_own_thread()
        call, request = self._version or self._version_call()
        with rpc_errors():
            resp = call(request, metadata=self.aio.metadata(), timeout=self.aio.timeout)
        return Version(version=resp.version, revision=resp.revision)

    def _version_call(self) -> tuple[Callable[..., Any], object]:
        # imported on first use, as the async client does (protobuf is not cheap)
        from google.protobuf import empty_pb2

        from pycontainerd.api.services.version.v1 import version_pb2_grpc

        stub = version_pb2_grpc.VersionStub(self._blocking_channel())
        self._version = (stub.Version, empty_pb2.Empty())
        return self._version

    def server(self) -> ServerInfo:
        """The daemon's UUID, pid and more."""
        return self._loop.run(self.aio.server())

    def content_store(self) -> Blocking:
        """The content store, blocking (``info``, ``walk``, ``delete``, ``reader_at``...)."""
        return Blocking(self._loop, self.aio.content_store())

    def snapshot_service(self, snapshotter: str | None = None) -> Blocking:
        """A snapshotter, blocking."""
        return Blocking(self._loop, self.aio.snapshot_service(snapshotter))

    def image_store(self) -> Blocking:
        """Image records, blocking."""
        return Blocking(self._loop, self.aio.image_store())

    def container_store(self) -> Blocking:
        """Container records, blocking."""
        return Blocking(self._loop, self.aio.container_store())

    def lease_manager(self) -> Blocking:
        """Leases, blocking (``create``, ``list``, ``list_resources``, ``delete``)."""
        return Blocking(self._loop, self.aio.lease_manager())

    def namespace_store(self) -> Blocking:
        """Namespaces, blocking."""
        return Blocking(self._loop, self.aio.namespace_store())

    def introspection(self) -> Blocking:
        """Plugins and server information, blocking."""
        return Blocking(self._loop, self.aio.introspection())

    @contextlib.contextmanager
    def with_lease(
        self,
        *,
        expire: timedelta | None = DEFAULT_LEASE_EXPIRY,
        labels: Mapping[str, str] | None = None,
    ) -> Iterator[str]:
        """Run this thread's calls in the block under a new lease, deleted on exit.

        As the async client's ``with_lease``: a random id, ``containerd.io/gc.expire``
        ``expire`` ahead; a lease already current is reused and kept.
        """
        current = namespaces.lease() or self.aio.lease
        if current:
            yield current
            return
        all_labels = dict(labels or {})
        if expire is not None:
            until = datetime.now(UTC) + expire
            all_labels[EXPIRE_LABEL] = until.strftime("%Y-%m-%dT%H:%M:%SZ")
        manager = self.aio.lease_manager()
        lease = self._loop.run(manager.create(generate_lease_id(), labels=all_labels))
        try:
            with namespaces.with_lease(lease.id):
                yield lease.id
        finally:
            self._loop.run(manager.delete(lease.id))

    # -- the facade -----------------------------------------------------------------------

    def pull(
        self,
        ref: str,
        *,
        unpack: bool = True,
        platform: str | Platform | None = None,
        all_platforms: bool = False,
        snapshotter: str | None = None,
        labels: Mapping[str, str] | None = None,
        progress: Callable[[Sequence[Job]], object] | None = None,
        resolver: Resolver | None = None,
        plain_http: bool = False,
        hosts_dir: str | os.PathLike[str] | None = None,
    ) -> Image:
        """Pull ``ref``; see :meth:`pycontainerd.client.facade.ClientFacade.pull`.

        ``progress`` is called on the client's loop thread.
        """
        aio = self._loop.run(
            self.aio.pull(
                ref,
                unpack=unpack,
                platform=platform,
                all_platforms=all_platforms,
                snapshotter=snapshotter,
                labels=labels,
                progress=progress,
                resolver=resolver,
                plain_http=plain_http,
                hosts_dir=hosts_dir,
            )
        )
        return Image(self._loop, aio)

    def get_image(self, name: str) -> Image:
        """The image ``name``."""
        return Image(self._loop, self._loop.run(self.aio.get_image(name)))

    def list_images(self, *filters: str) -> list[Image]:
        """Images matching any of ``filters``."""
        return [Image(self._loop, i) for i in self._loop.run(self.aio.list_images(*filters))]

    def delete_image(self, name: str, *, sync: bool = False) -> None:
        """Delete the image ``name``."""
        self._loop.run(self.aio.delete_image(name, sync=sync))

    def push(
        self,
        ref: str,
        *,
        local: str | None = None,
        platform: str | Platform | None = None,
        progress: Callable[[Sequence[Job]], object] | None = None,
        resolver: Resolver | None = None,
        plain_http: bool = False,
        hosts_dir: str | os.PathLike[str] | None = None,
    ) -> Descriptor:
        """Push an image; see :meth:`pycontainerd.client.facade.ClientFacade.push`."""
        return self._loop.run(
            self.aio.push(
                ref,
                local=local,
                platform=platform,
                progress=progress,
                resolver=resolver,
                plain_http=plain_http,
                hosts_dir=hosts_dir,
            )
        )

    def import_archive(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        index_name: str = "",
        all_platforms: bool = False,
        platform: str | Platform | None = None,
        unpack: bool = False,
        snapshotter: str | None = None,
    ) -> list[Image]:
        """Import an image archive; return the images."""
        found = self._loop.run(
            self.aio.import_archive(
                source,
                index_name=index_name,
                all_platforms=all_platforms,
                platform=platform,
                unpack=unpack,
                snapshotter=snapshotter,
            )
        )
        return [Image(self._loop, i) for i in found]

    def export_archive(
        self,
        destination: str | os.PathLike[str] | IO[bytes],
        *names: str,
        all_platforms: bool = False,
        platforms: Sequence[str | Platform] = (),
    ) -> None:
        """Write images to an OCI layout tar."""
        self._loop.run(
            self.aio.export_archive(
                destination, *names, all_platforms=all_platforms, platforms=platforms
            )
        )

    def new_container(
        self,
        container_id: str,
        image: Image | AsyncImage | str | None = None,
        *,
        args: Sequence[str] = (),
        env: Sequence[str] = (),
        cwd: str = "",
        user: str = "",
        tty: bool = False,
        hostname: str = "",
        rootfs: str = "",
        labels: Mapping[str, str] | None = None,
        snapshotter: str = "",
        runtime: str = "io.containerd.runc.v2",
        spec_opts: Sequence[SpecOpt] = (),
        platform: str | Platform | None = None,
    ) -> Container:
        """Create a container; see :meth:`pycontainerd.client.facade.ClientFacade.new_container`."""
        source = image.aio if isinstance(image, Image) else image
        aio = self._loop.run(
            self.aio.new_container(
                container_id,
                source,
                args=args,
                env=env,
                cwd=cwd,
                user=user,
                tty=tty,
                hostname=hostname,
                rootfs=rootfs,
                labels=labels,
                snapshotter=snapshotter,
                runtime=runtime,
                spec_opts=spec_opts,
                platform=platform,
            )
        )
        return Container(self._loop, aio)

    def load_container(self, container_id: str) -> Container:
        """The container ``container_id``."""
        return Container(self._loop, self._loop.run(self.aio.load_container(container_id)))

    def list_containers(self, *filters: str) -> list[Container]:
        """Containers matching any of ``filters``."""
        found = self._loop.run(self.aio.list_containers(*filters))
        return [Container(self._loop, c) for c in found]

    def subscribe(self, *filters: str) -> Subscription:
        """Events matching any of ``filters`` as they happen.

        ``with client.subscribe(...) as events:`` waits until the stream is
        live and ends it with the block; see
        :class:`pycontainerd.client.facade.Subscription`.
        """
        return Subscription(self._loop, self.aio.subscribe(*filters))


class Subscription:
    """The sync twin of :class:`pycontainerd.client.facade.Subscription`: an iterator of events."""

    def __init__(self, loop: _Loop, aio: AsyncSubscription) -> None:
        self._loop = loop
        self.aio = aio
        self._iter: Iterator[Event] | None = None

    def start(self) -> Subscription:
        """Start the stream and wait until it is live."""
        self._loop.run(self.aio.start())
        return self

    def __iter__(self) -> Subscription:
        return self

    def __next__(self) -> Event:
        try:
            return self._loop.run(anext(self.aio))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """End the stream."""
        if not self._loop.loop.is_closed():
            self._loop.run(self.aio.aclose())

    def __enter__(self) -> Subscription:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
