"""The high-level half of :class:`~pycontainerd.client.client.Client`, like containerd's Go client.

``Client`` inherits these methods; they return the objects of
:mod:`pycontainerd.client.objects` and build on the package's functions
(:func:`~pycontainerd.client.pull.pull`, :func:`~pycontainerd.client.push.push`,
:func:`~pycontainerd.client.containers.new_container`, the archive
importer and exporter, the Events proxy)::

    async with Client() as client:
        image = await client.pull("docker.io/library/busybox:latest")
        container = await client.new_container("demo", image, args=["echo", "hi"])
        task = await container.new_task(Stdio.capture())
        await task.start()
        status = await task.wait()
        print(status.code, (await task.read_output()).stdout)
        await task.delete()
        await container.delete()

:mod:`pycontainerd.client.sync` offers the same names without ``await``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from typing import IO, TYPE_CHECKING, Any, Final, Self, cast

from pycontainerd.core.closing import AsyncClosing

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence

    from pycontainerd.client.objects import Container, Event, Image
    from pycontainerd.client.oci import SpecOpt
    from pycontainerd.client.progress import Job, Tracker
    from pycontainerd.client.proxies import Services
    from pycontainerd.client.remotes.resolver import Resolver
    from pycontainerd.core.events import Envelope
    from pycontainerd.core.platforms import Platform
    from pycontainerd.core.types import Descriptor

DEFAULT_RUNTIME: Final = "io.containerd.runc.v2"
PROGRESS_INTERVAL: Final = 0.1
"""Seconds between calls of a ``progress`` callback."""


class ClientFacade:
    """Images, containers, tasks, events and archives as objects; mixed into ``Client``."""

    __slots__ = ()

    def _client(self) -> Services:
        return cast("Services", self)

    # -- images ---------------------------------------------------------------------

    async def pull(
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
        """Pull ``ref`` from its registry, unpack it (unless not ``unpack``), record it.

        Args:
            ref: a full reference (``docker.io/library/busybox:latest``).
            unpack: unpack the layers into ``snapshotter`` (default: the client's).
            platform: ``"linux/arm64"`` or a ``Platform`` (default: this host's).
            all_platforms: fetch every platform of an index.
            snapshotter: where to unpack.
            labels: labels of the image record.
            progress: called with the jobs (one per blob: ``ref``, ``status``,
                ``offset``, ``total``) every 0.1 s and once at the end.
            resolver: a configured registry resolver (credentials, TLS);
                default: ``hosts_dir``'s ``hosts.toml`` files, HTTPS (plain HTTP
                with ``plain_http``; a registry on this machine may answer
                in plain HTTP anyway).
            plain_http: talk plain HTTP to the registry.
            hosts_dir: the ``hosts.toml`` directory (``certs.d``).

        Raises:
            NotFoundError, UnauthenticatedError, UnavailableError, ...: as
                :func:`pycontainerd.client.pull.pull`.
        """
        from pycontainerd.client.objects import Image, parse_platform
        from pycontainerd.client.pull import pull as pull_image

        client = self._client()
        want = parse_platform(platform)
        async with (
            _resolver(resolver, plain_http, hosts_dir) as res,
            _progress(progress) as tracker,
        ):
            result = await pull_image(
                client,
                ref,
                res,
                platforms=(want,) if want is not None else (),
                all_platforms=all_platforms,
                labels=labels,
                unpack_layers=unpack,
                snapshotter=snapshotter,
                tracker=tracker,
            )
        return Image(client, result.image)

    async def get_image(self, name: str) -> Image:
        """The image ``name``.

        Raises:
            NotFoundError: ``image "<name>": not found``.
        """
        from pycontainerd.client.objects import Image

        client = self._client()
        return Image(client, await client.image_store().get(name))

    async def list_images(self, *filters: str) -> list[Image]:
        """Images matching any of ``filters`` (``name==...``, ``labels.<key>``...); all without."""
        from pycontainerd.client.objects import Image

        client = self._client()
        return [Image(client, record) for record in await client.image_store().list(*filters)]

    async def delete_image(self, name: str, *, sync: bool = False) -> None:
        """Delete the image record ``name`` (``sync``: wait until its content is collected)."""
        await self._client().image_store().delete(name, sync=sync)

    async def push(
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
        """Push the image ``local`` (default: ``ref``) to ``ref``; return the pushed root.

        ``platform`` limits an index's manifests to one platform; see
        :meth:`pull` for the other arguments.
        """
        from pycontainerd.client.objects import parse_platform
        from pycontainerd.client.push import push as push_image

        client = self._client()
        async with (
            _resolver(resolver, plain_http, hosts_dir) as res,
            _progress(progress) as tracker,
        ):
            return await push_image(
                client,
                ref,
                res,
                local=local,
                platform=parse_platform(platform),
                tracker=tracker,
            )

    async def import_archive(
        self,
        source: str | os.PathLike[str] | IO[bytes],
        *,
        index_name: str = "",
        all_platforms: bool = False,
        platform: str | Platform | None = None,
        unpack: bool = False,
        snapshotter: str | None = None,
    ) -> list[Image]:
        """Import an OCI layout or ``docker save`` tar (a path or a binary file); return the images.

        Images are named from the archive's annotations; ``index_name`` also
        records the whole index. With ``unpack``, each is unpacked.
        """
        from pycontainerd.client.archive.importer import (
            ImportOptions,
            import_images,
            strict_matcher,
        )
        from pycontainerd.client.objects import Image, parse_platform

        client = self._client()
        want = parse_platform(platform)
        options = ImportOptions(
            index_name=index_name,
            all_platforms=all_platforms,
            platform=strict_matcher(want) if want is not None else None,
        )
        with _open(source, "rb") as stream:
            records = await import_images(client, stream, options)
        images = [Image(client, record) for record in records]
        if unpack:
            for image in images:
                await image.unpack(snapshotter, want)
        return images

    async def export_archive(
        self,
        destination: str | os.PathLike[str] | IO[bytes],
        *names: str,
        all_platforms: bool = False,
        platforms: Sequence[str | Platform] = (),
    ) -> None:
        """Write the images ``names`` as an OCI layout tar (also loadable by ``docker load``)."""
        from pycontainerd.client.archive.exporter import ExportOptions, export_images
        from pycontainerd.client.objects import parse_platform

        wanted = tuple(p for p in (parse_platform(x) for x in platforms) if p is not None)
        options = ExportOptions(platforms=wanted, all_platforms=all_platforms)
        with _open(destination, "wb") as out:
            await export_images(self._client(), out, list(names), options)

    # -- containers -------------------------------------------------------------------

    async def new_container(
        self,
        container_id: str,
        image: Image | str | None = None,
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
        runtime: str = DEFAULT_RUNTIME,
        spec_opts: Sequence[SpecOpt] = (),
        platform: str | Platform | None = None,
    ) -> Container:
        """Create the container ``container_id`` from ``image`` (or the host directory ``rootfs``).

        The spec starts from containerd's defaults and the image's config;
        ``args`` replaces the image's entrypoint and command, ``env`` adds
        ``KEY=VALUE`` entries, ``cwd``, ``user`` (``uid[:gid]`` or names),
        ``tty`` and ``hostname`` set theirs; ``spec_opts``
        (:mod:`pycontainerd.client.oci`'s ``with_*``) apply last. The
        image is unpacked first when ``snapshotter`` does not have it.

        Raises:
            InvalidArgumentError: neither or both of ``image`` and ``rootfs``.
            AlreadyExistsError: the id is taken.
        """
        from pycontainerd.client import oci
        from pycontainerd.client.containers import new_container
        from pycontainerd.client.objects import Container, Image, parse_platform

        opts: list[SpecOpt] = []
        if args:
            opts.append(oci.with_process_args(*args))
        if env:
            opts.append(oci.with_env(env))
        if cwd:
            opts.append(oci.with_cwd(cwd))
        if tty:
            opts.append(oci.with_tty)
        if hostname:
            opts.append(oci.with_hostname(hostname))
        opts.extend(spec_opts)
        client = self._client()
        record = await new_container(
            client,
            container_id,
            image=image.name if isinstance(image, Image) else (image or ""),
            rootfs=rootfs,
            snapshotter=snapshotter,
            runtime=runtime,
            labels=labels,
            spec_opts=opts,
            user=user,
            platform=parse_platform(platform),
        )
        return Container(client, record)

    async def load_container(self, container_id: str) -> Container:
        """The container ``container_id``.

        Raises:
            NotFoundError: ``container "<id>" in namespace "<ns>": not found``.
        """
        from pycontainerd.client.objects import Container

        client = self._client()
        return Container(client, await client.container_store().get(container_id))

    async def list_containers(self, *filters: str) -> list[Container]:
        """Containers matching any of ``filters`` (``image==...``, ``labels.<key>``...)."""
        from pycontainerd.client.objects import Container

        client = self._client()
        return [Container(client, r) for r in await client.container_store().list(*filters)]

    # -- events -------------------------------------------------------------------------

    def subscribe(self, *filters: str) -> Subscription:
        """Events of every namespace matching any of ``filters``, as they happen.

        Filters use containerd's syntax: ``topic=="/tasks/exit"``,
        ``namespace==default``, ``topic~="/images/"``. Iterate the result
        with ``async for``. Used as ``async with client.subscribe(...) as
        events:``, the block starts only once the daemon delivers to this
        subscription (see :class:`Subscription`), so nothing that happens
        in it is missed; the stream ends with the block.
        """
        return Subscription(self._client(), filters)


class Subscription(AsyncClosing):
    """An event stream: an async iterator of :class:`Event`, and an async context manager.

    Entering it starts the stream and waits until it is live: it publishes a
    probe event until the probe comes back through the stream, then drops
    the probes. Events that came before the probe are kept. Without ``async
    with`` the stream starts at the first ``anext`` and nothing is published.

    A containerd stream says nothing until its first event, so the probe is
    an event, made to be seen by no one else: its namespace
    (``pycontainerd-subscribe-<random>``) and topic
    (``/pycontainerd/subscribe/<random>``) are this subscription's own, and
    its filters get one clause matching exactly them. A subscriber that
    filters by namespace or topic never sees it; only one with no filters
    at all (every event of every namespace, as ``ctr events`` without
    arguments) does, since containerd delivers every event to such a
    subscriber. Other pycontainerd subscriptions drop probes whatever their
    filters. The namespace is only a field of the event: it is not created.
    """

    PROBE_PREFIX: Final = "/pycontainerd/subscribe/"
    PROBE_NAMESPACE_PREFIX: Final = "pycontainerd-subscribe-"

    def __init__(self, client: Services, filters: Sequence[str]) -> None:
        self._client = client
        self._filters = tuple(filters)
        self._probe = ""
        self._probe_namespace = ""
        self._stream: AsyncIterator[Envelope] | None = None
        self._buffered: list[Event] = []
        self._next: asyncio.Future[Envelope] | None = None

    def _open(self) -> AsyncIterator[Envelope]:
        if self._stream is None:
            filters = self._filters
            if self._probe and filters:
                mine = f'namespace=="{self._probe_namespace}",topic=="{self._probe}"'
                filters = (*filters, mine)
            self._stream = self._client.event_service().subscribe(*filters)
        return self._stream

    async def start(self) -> Self:
        """Start the stream and wait until it is live (see the class docstring)."""
        import uuid

        from google.protobuf import empty_pb2

        if self._stream is not None:
            return self
        from pycontainerd.core import namespaces

        unique = uuid.uuid4().hex
        self._probe = f"{self.PROBE_PREFIX}{unique}"
        self._probe_namespace = f"{self.PROBE_NAMESPACE_PREFIX}{unique}"
        stream = self._open()
        events = self._client.event_service()
        delay = 0.01
        self._next = asyncio.ensure_future(anext(stream))
        try:
            while True:
                with namespaces.with_namespace(self._probe_namespace):
                    await events.publish(self._probe, empty_pb2.Empty())
                done, _ = await asyncio.wait({self._next}, timeout=delay)
                delay = min(delay * 2, 1.0)
                while done:
                    envelope = self._next.result()
                    self._next = asyncio.ensure_future(anext(stream))
                    if (
                        envelope.topic == self._probe
                        and envelope.namespace == self._probe_namespace
                    ):
                        return self
                    if not envelope.topic.startswith(self.PROBE_PREFIX):
                        self._buffered.append(_event(envelope))
                    done, _ = await asyncio.wait({self._next}, timeout=0)
        except BaseException:
            await self.aclose()
            raise

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        if self._buffered:
            return self._buffered.pop(0)
        stream = self._open()
        while True:
            if self._next is not None:
                following, self._next = self._next, None
                envelope = await following
            else:
                envelope = await anext(stream)
            if not envelope.topic.startswith(self.PROBE_PREFIX):
                return _event(envelope)

    async def aclose(self) -> None:
        """End the stream."""
        following, self._next = self._next, None
        if following is not None and not following.done():
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await following
        stream, self._stream = self._stream, None
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

    async def __aenter__(self) -> Self:
        return await self.start()


def _event(envelope: Envelope) -> Event:
    from google.protobuf import any_pb2, json_format

    from pycontainerd.api import typeurl
    from pycontainerd.client.objects import Event

    payload = envelope.event
    fields: dict[str, Any] = {}
    with contextlib.suppress(Exception):  # a type this client has no class for
        msg = typeurl.unpack(any_pb2.Any(type_url=payload.type_url, value=payload.value))
        fields = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    return Event(
        timestamp=envelope.timestamp,
        namespace=envelope.namespace,
        topic=envelope.topic,
        type_url=payload.type_url,
        fields=fields,
    )


@contextlib.asynccontextmanager
async def _resolver(
    given: Resolver | None, plain_http: bool, hosts_dir: str | os.PathLike[str] | None
) -> AsyncIterator[Resolver]:
    if given is not None:
        yield given
        return
    from pathlib import Path

    from pycontainerd.client.remotes.hosts import HostsConfig
    from pycontainerd.client.remotes.resolver import Resolver

    config = HostsConfig(
        hosts_dir=Path(hosts_dir) if hosts_dir else None,
        default_scheme="http" if plain_http else "https",
    )
    async with Resolver(config) as made:
        yield made


@contextlib.asynccontextmanager
async def _progress(
    callback: Callable[[Sequence[Job]], object] | None,
) -> AsyncIterator[Tracker]:
    from pycontainerd.client.progress import Tracker

    tracker = Tracker()
    if callback is None:
        yield tracker
        return

    def report() -> None:
        callback([dataclasses.replace(job) for job in tracker.jobs.values()])

    async def ticker() -> None:
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            report()

    ticking = asyncio.ensure_future(ticker())
    try:
        yield tracker
    finally:
        ticking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticking
    report()


@contextlib.contextmanager
def _open(target: str | os.PathLike[str] | IO[bytes], mode: str) -> Iterator[IO[bytes]]:
    if isinstance(target, str | os.PathLike):
        with open(target, mode) as f:
            yield cast("IO[bytes]", f)
    else:
        yield target
