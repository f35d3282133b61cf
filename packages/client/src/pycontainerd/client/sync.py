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
dialled like the async one (same address, TLS and headers). Any number of
threads may call one client at once (their calls run concurrently on its
loop). A call carries the caller's context:
``pycontainerd.core.namespaces.with_namespace`` and :meth:`Client.with_lease`
in one thread apply to that thread's calls only. Async iterators
(``subscribe``, ``output``, ``content_store().walk()``) become ordinary
iterators.

Objects (:class:`Image`, :class:`Container`, :class:`Task`,
:class:`Process`) wrap their async counterparts, reachable as ``.aio``.
Their methods are made from the async ones (``_twin``): the same names and
parameters, a sync object where the async method returns an async one, and
a docstring pointing to the async method. The proxies (``content_store()``,
``lease_manager()``...) are wrapped generically: every coroutine method
blocks, every async iterator iterates.

Calling the sync client from inside its own loop (for example from a
``progress`` callback) would wait for itself and raises ``RuntimeError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import threading
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import grpc

from pycontainerd.client._errors import rpc_errors
from pycontainerd.client.client import (
    DEFAULT_LEASE_EXPIRY,
    Version,
    generate_lease_id,
    lease_labels,
)
from pycontainerd.client.client import Client as AsyncClient
from pycontainerd.client.proxies import call_options
from pycontainerd.core import namespaces
from pycontainerd.core.closing import Closing

# The async classes (``Async*``) are named in the ``_twin(lambda: ...)``
# declarations, whose lambdas are never called: they give the type checker the
# async methods' signatures without importing objects (and the Tasks stubs)
# with this module, hence the ``noqa: TC004``.
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
    from datetime import datetime, timedelta
    from types import TracebackType

    from pycontainerd.client.address import TLSConfig
    from pycontainerd.client.facade import Subscription as AsyncSubscription
    from pycontainerd.client.objects import Container as AsyncContainer  # noqa: TC004
    from pycontainerd.client.objects import Event, ProcessInfo
    from pycontainerd.client.objects import Image as AsyncImage  # noqa: TC004
    from pycontainerd.client.objects import Process as AsyncProcess  # noqa: TC004
    from pycontainerd.client.objects import Task as AsyncTask  # noqa: TC004
    from pycontainerd.client.oci import SpecOpt
    from pycontainerd.client.stdio import Output, Stdio
    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.types import Descriptor

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
A = TypeVar("A")
R = TypeVar("R")
W = TypeVar("W")
P = ParamSpec("P")


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


class _Twin(Generic[P, R]):
    """A blocking method made from the async method of the same name of ``self.aio``.

    Declared as ``name = _twin(lambda: AsyncClass.name)``: the lambda only
    gives the type checker the async method's parameters and result (it is
    never called, so the async module is not imported until used). A call
    runs the coroutine on the client's loop and passes the result through
    ``wrap`` (an async object becomes its sync twin). With ``run=False``
    the async method is a plain one (the proxies): it is called here and
    only its result wrapped.
    """

    def __init__(self, wrap: Callable[[_Loop, Any], Any] | None, *, run: bool = True) -> None:
        self._wrap = wrap
        self._run = run
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name
        self.__doc__ = f"See :meth:`{getattr(owner, '_AIO', '')}.{name}` (blocking)."

    @overload
    def __get__(self, obj: None, owner: type) -> _Twin[P, R]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> Callable[P, R]: ...
    def __get__(self, obj: object, owner: type) -> _Twin[P, R] | Callable[P, R]:
        if obj is None:
            return self
        method = getattr(obj.aio, self._name)  # type: ignore[attr-defined]
        loop: _Loop = obj._loop  # type: ignore[attr-defined]
        wrap, run = self._wrap, self._run

        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            result = loop.run(method(*args, **kwargs)) if run else method(*args, **kwargs)
            return result if wrap is None else wrap(loop, result)  # type: ignore[no-any-return]

        call.__name__ = self._name
        call.__doc__ = self.__doc__
        return call


def _twin(ref: Callable[[], Callable[Concatenate[Any, P], Awaitable[R]]]) -> _Twin[P, R]:
    """The blocking twin of the async method ``ref()`` (see :class:`_Twin`), same result."""
    return _Twin(None)


def _twin_as(
    ref: Callable[[], Callable[Concatenate[Any, P], Awaitable[Any]]],
    wrap: Callable[[_Loop, Any], W],
) -> _Twin[P, W]:
    """The blocking twin of ``ref()`` whose result is made a sync object by ``wrap``."""
    return _Twin(wrap)


def _proxy(ref: Callable[[], Callable[Concatenate[Any, P], object]]) -> _Twin[P, Blocking]:
    """A proxy of the async client (``content_store()``...) made :class:`Blocking`."""
    return _Twin(Blocking, run=False)


def _each(wrap: Callable[[_Loop, Any], W]) -> Callable[[_Loop, Any], list[W]]:
    """``wrap`` for every item of a list."""
    return lambda loop, items: [wrap(loop, item) for item in items]


class _Field(Generic[T]):
    """A read-only attribute of ``self.aio`` of the same name."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Field[T]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object, owner: type) -> _Field[T] | T:
        if obj is None:
            return self
        return getattr(obj.aio, self._name)  # type: ignore[attr-defined,no-any-return]


class _Twinned(Generic[A]):
    """What every sync object is: its async twin (``aio``) and the loop that runs it."""

    def __init__(self, loop: _Loop, aio: A) -> None:
        self._loop = loop
        self.aio = aio

    def __repr__(self) -> str:
        return repr(self.aio)


class Image(_Twinned["AsyncImage"]):
    """The sync twin of :class:`pycontainerd.client.objects.Image`."""

    _AIO = "pycontainerd.client.objects.Image"

    name: _Field[str] = _Field("The image's name.")
    target: _Field[Descriptor] = _Field("Its manifest or index descriptor.")
    labels: _Field[Mapping[str, str]] = _Field("Its labels.")
    created_at: _Field[datetime] = _Field("When it was created.")
    updated_at: _Field[datetime] = _Field("When it was last updated.")

    manifest = _twin(lambda: AsyncImage.manifest)
    config = _twin(lambda: AsyncImage.config)
    unpack = _twin(lambda: AsyncImage.unpack)
    is_unpacked = _twin(lambda: AsyncImage.is_unpacked)
    delete = _twin(lambda: AsyncImage.delete)


class Process(_Twinned["AsyncProcess"]):
    """The sync twin of :class:`pycontainerd.client.objects.Process`."""

    _AIO = "pycontainerd.client.objects.Process"

    id: _Field[str] = _Field("The exec id, or the container id for a task.")
    container_id: _Field[str] = _Field("The container it belongs to.")
    pid: _Field[int] = _Field("The host pid.")

    start = _twin(lambda: AsyncProcess.start)
    wait = _twin(lambda: AsyncProcess.wait)
    kill = _twin(lambda: AsyncProcess.kill)
    status = _twin(lambda: AsyncProcess.status)
    close_stdin = _twin(lambda: AsyncProcess.close_stdin)
    resize = _twin(lambda: AsyncProcess.resize)
    read_output = _twin(lambda: AsyncProcess.read_output)
    delete = _twin(lambda: AsyncProcess.delete)

    def output(self, stream: str = "stdout") -> Iterator[bytes]:
        """Its captured output chunk by chunk (see ``Stdio.capture``)."""
        return self._loop.iterate(self.aio.output(stream))


class Task(Process):
    """The sync twin of :class:`pycontainerd.client.objects.Task`."""

    _AIO = "pycontainerd.client.objects.Task"
    aio: AsyncTask

    pause = _twin(lambda: AsyncTask.pause)
    resume = _twin(lambda: AsyncTask.resume)
    exec = _twin_as(lambda: AsyncTask.exec, Process)
    pids = _twin(lambda: AsyncTask.pids)
    metrics = _twin(lambda: AsyncTask.metrics)


class Container(_Twinned["AsyncContainer"]):
    """The sync twin of :class:`pycontainerd.client.objects.Container`."""

    _AIO = "pycontainerd.client.objects.Container"

    id: _Field[str] = _Field("The container's id.")
    image_name: _Field[str] = _Field("The image it was made from.")
    labels: _Field[Mapping[str, str]] = _Field("Its labels.")
    runtime: _Field[str] = _Field("Its runtime.")
    snapshotter: _Field[str] = _Field("The snapshotter of its root filesystem.")
    snapshot_key: _Field[str] = _Field("The key of its snapshot.")
    created_at: _Field[datetime] = _Field("When it was created.")

    def refresh(self) -> Container:
        """Re-read its record; returns ``self``."""
        self._loop.run(self.aio.refresh())
        return self

    spec = _twin(lambda: AsyncContainer.spec)
    image = _twin_as(lambda: AsyncContainer.image, Image)
    set_labels = _twin(lambda: AsyncContainer.set_labels)
    new_task = _twin_as(lambda: AsyncContainer.new_task, Task)
    task = _twin_as(lambda: AsyncContainer.task, Task)
    delete = _twin(lambda: AsyncContainer.delete)


class Client(Closing):
    """The sync twin of :class:`pycontainerd.client.client.Client` (same arguments).

    ``with Client(...) as client`` waits for the daemon (``connect_timeout``)
    and, on exit, closes the channel and stops the loop thread; so does
    :meth:`close`.
    """

    _AIO = "pycontainerd.client.client.Client"

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

    def __enter__(self) -> Self:
        try:
            self.connect()
        except BaseException:
            self.close()
            raise
        return self

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
            resp = call(request, **call_options(self.aio))
        return Version(version=resp.version, revision=resp.revision)

    def _version_call(self) -> tuple[Callable[..., Any], object]:
        # imported on first use, as the async client does (protobuf is not cheap)
        from google.protobuf import empty_pb2

        from pycontainerd.api.services.version.v1 import version_pb2_grpc

        stub = version_pb2_grpc.VersionStub(self._blocking_channel())
        self._version = (stub.Version, empty_pb2.Empty())
        return self._version

    server = _twin(lambda: AsyncClient.server)
    content_store = _proxy(lambda: AsyncClient.content_store)
    snapshot_service = _proxy(lambda: AsyncClient.snapshot_service)
    image_store = _proxy(lambda: AsyncClient.image_store)
    container_store = _proxy(lambda: AsyncClient.container_store)
    lease_manager = _proxy(lambda: AsyncClient.lease_manager)
    namespace_store = _proxy(lambda: AsyncClient.namespace_store)
    event_service = _proxy(lambda: AsyncClient.event_service)
    introspection = _proxy(lambda: AsyncClient.introspection)
    diff_service = _proxy(lambda: AsyncClient.diff_service)

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
        manager = self.aio.lease_manager()
        lease = self._loop.run(
            manager.create(generate_lease_id(), labels=lease_labels(expire, labels))
        )
        try:
            with namespaces.with_lease(lease.id):
                yield lease.id
        finally:
            self._loop.run(manager.delete(lease.id))

    # -- the facade (``progress`` callbacks run on the client's loop thread) --------------

    pull = _twin_as(lambda: AsyncClient.pull, Image)
    get_image = _twin_as(lambda: AsyncClient.get_image, Image)
    list_images = _twin_as(lambda: AsyncClient.list_images, _each(Image))
    delete_image = _twin(lambda: AsyncClient.delete_image)
    push = _twin(lambda: AsyncClient.push)
    import_archive = _twin_as(lambda: AsyncClient.import_archive, _each(Image))
    export_archive = _twin(lambda: AsyncClient.export_archive)
    load_container = _twin_as(lambda: AsyncClient.load_container, Container)
    list_containers = _twin_as(lambda: AsyncClient.list_containers, _each(Container))

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

    def subscribe(self, *filters: str) -> Subscription:
        """Events matching any of ``filters`` as they happen.

        ``with client.subscribe(...) as events:`` waits until the stream is
        live and ends it with the block; see
        :class:`pycontainerd.client.facade.Subscription`.
        """
        return Subscription(self._loop, self.aio.subscribe(*filters))


class Subscription(Closing):
    """The sync twin of :class:`pycontainerd.client.facade.Subscription`: an iterator of events."""

    def __init__(self, loop: _Loop, aio: AsyncSubscription) -> None:
        self._loop = loop
        self.aio = aio
        self._iter: Iterator[Event] | None = None

    def start(self) -> Self:
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

    def __enter__(self) -> Self:
        return self.start()
