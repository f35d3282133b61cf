"""PullImage: fetch an image into namespace ``k8s.io``, unpack it, record the CRI's names.

The work is ``pycontainerd.remotes``' pull run against the daemon's own stores
(the Transfer plugin's :class:`~pycontainerd.transfer.local.LocalServices`).
As containerd's CRI, a pulled image is recorded under three names, all with
the label ``io.cri-containerd.image=managed``: the normalized reference, the
image id (``sha256:<config digest>``) and, for a tag, the repo digest
``<repo>@<root digest>``. Credentials come from the request's ``AuthConfig``
(``username``/``password``, or ``auth`` = base64 ``user:pass``); registry
hosts from ``registry.config_path`` (``hosts.toml``) or ``registry.mirrors``.

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from pycontainerd.core import platforms
from pycontainerd.core.errdefs import CanceledError, ContainerdError, InvalidArgumentError
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.cri.catalog import K8S_NAMESPACE, PINNED, PINNED_LABEL
from pycontainerd.cri.images import image_config, normalize

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from pycontainerd.cri.config import CriConfig
    from pycontainerd.remotes.hosts import HostsConfig, RegistryHost
    from pycontainerd.remotes.progress import Tracker
    from pycontainerd.remotes.services import ImageServices

MANAGED_LABEL = "io.cri-containerd.image"
MANAGED = "managed"


def credentials(username: str = "", password: str = "", auth: str = "") -> tuple[str, str] | None:
    """The (user, secret) of a CRI ``AuthConfig``; ``None`` for anonymous.

    Raises:
        InvalidArgumentError: ``auth`` is not base64 of ``user:pass``.
    """
    if username or password:
        return username, password
    if not auth:
        return None
    try:
        decoded = base64.b64decode(auth, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        decoded = ""
    user, sep, secret = decoded.partition(":")
    if not sep:
        msg = "invalid auth config: auth is not base64 of user:password: invalid argument"
        raise InvalidArgumentError(msg)
    return user, secret


def _prefixed(exc: ContainerdError, prefix: str) -> ContainerdError:
    try:
        return type(exc)(prefix + exc.message)
    except TypeError:
        return exc


log = logging.getLogger(__name__)
T = TypeVar("T")

#: Longest pause between two looks at a pull's progress.
PROGRESS_CHECK_INTERVAL = 10.0


def _progress(tracker: Tracker) -> tuple[int, float]:
    return tracker.transferred, max((j.updated for j in tracker.jobs.values()), default=0.0)


def _transferring(tracker: Tracker) -> bool:
    return any(j.status in ("resolving", "downloading") for j in tracker.jobs.values())


async def _with_progress(work: Coroutine[object, object, T], tracker: Tracker, timeout: float) -> T:  # noqa: ASYNC109
    """Await ``work`` (a pull updating ``tracker``), cancelled when it stalls.

    Stalled: ``timeout`` seconds in which it moved no data (containerd's
    ``image_pull_progress_timeout``; 0: no limit). Time spent while nothing is
    being fetched (unpacking) does not count.

    Raises:
        CanceledError: ``work`` made no progress for ``timeout`` seconds.
    """
    if timeout <= 0:
        return await work
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    interval = min(PROGRESS_CHECK_INTERVAL, timeout / 2)
    last, seen = _progress(tracker), loop.time()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            now = _progress(tracker)
            if now != last or not _transferring(tracker):
                last, seen = now, loop.time()
            elif loop.time() - seen >= timeout:
                log.error("cancel pulling image because of no progress in %gs", timeout)
                msg = f"no progress in {timeout:g}s (image_pull_progress_timeout)"
                raise CanceledError(msg)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class ImagePuller:
    """Pulls images for the CRI (one pull per reference at a time)."""

    def __init__(self, config: CriConfig, services: ImageServices) -> None:
        self.config = config
        self.services = services
        self._locks: dict[str, asyncio.Lock] = {}

    def _hosts(self) -> HostsConfig | Callable[[str], list[RegistryHost]]:
        """The servers of a registry: ``config_path``'s hosts.toml, else the mirrors.

        With mirrors (or neither), ``registry.configs.<host>.tls`` applies to
        the server ``<host>`` (a mirror endpoint or the registry itself).
        """
        from pycontainerd.remotes.hosts import Capability, HostsConfig
        from pycontainerd.remotes.hosts import RegistryHost as Host

        if self.config.registry_config_path:
            from pathlib import Path

            return HostsConfig(hosts_dir=Path(self.config.registry_config_path))
        upstream = HostsConfig()
        mirrors = self.config.registry_mirrors

        def hosts(registry: str) -> list[RegistryHost]:
            endpoints = mirrors.get(registry) or mirrors.get("*") or ()
            out: list[RegistryHost] = []
            for endpoint in endpoints:
                url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
                path = url.path.rstrip("/") or "/v2"
                if not path.endswith("/v2"):
                    path += "/v2"
                out.append(
                    Host(
                        scheme=url.scheme,
                        host=url.netloc,
                        path=path,
                        capabilities=Capability.PULL | Capability.RESOLVE,
                    )
                )
            return [self._with_tls(h) for h in out + upstream.hosts(registry)]

        return hosts

    def _with_tls(self, host: RegistryHost) -> RegistryHost:
        import dataclasses

        from pycontainerd.remotes.hosts import TLSOptions

        cfg = self.config.registry_configs.get(host.host)
        if cfg is None or not (cfg.ca_file or cfg.cert_file or cfg.insecure_skip_verify):
            return host
        tls = TLSOptions(
            ca_files=(cfg.ca_file,) if cfg.ca_file else (),
            client_pairs=((cfg.cert_file, cfg.key_file),) if cfg.cert_file else (),
            skip_verify=cfg.insecure_skip_verify or None,
        )
        return dataclasses.replace(host, tls=tls)

    def configured_credentials(self, host: str) -> tuple[str, str] | None:
        """``registry.configs.<host>.auth`` as (user, secret); None when unset.

        Raises:
            InvalidArgumentError: its ``auth`` is not base64 ``user:password``.
        """
        cfg = self.config.registry_configs.get(host)
        if cfg is None:
            return None
        if cfg.identity_token:
            return ("", cfg.identity_token)
        return credentials(cfg.username, cfg.password, cfg.auth)

    async def pull(self, ref: str, auth: tuple[str, str] | None = None) -> str:
        """Pull ``ref`` and return its image id (``sha256:<config digest>``).

        Raises:
            InvalidArgumentError: a malformed reference or auth config.
            NotFoundError: the registry has no such image.
            UnauthenticatedError: the registry refused the credentials.
            and the registry's, content store's and snapshotter's other errors,
            each prefixed ``failed to pull and unpack image "<ref>": ``.
        """
        name = normalize(ref)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                return await self._pull(name, auth)
            except ContainerdError as exc:
                raise _prefixed(exc, f'failed to pull and unpack image "{name}": ') from None

    async def _pull(self, name: str, auth: tuple[str, str] | None) -> str:
        from pycontainerd.remotes.progress import Tracker
        from pycontainerd.remotes.pull import pull, record_image
        from pycontainerd.remotes.resolver import Resolver

        async def creds(host: str) -> tuple[str, str] | None:
            # the request's AuthConfig first, then registry.configs.<host>.auth (containerd 1.6)
            return auth or self.configured_credentials(host)

        labels = {MANAGED_LABEL: MANAGED}
        with contextlib.suppress(InvalidArgumentError):
            if name == normalize(self.config.sandbox_image):
                labels[PINNED_LABEL] = PINNED
        with_creds = auth or any(
            c.username or c.auth or c.identity_token for c in self.config.registry_configs.values()
        )
        resolver = Resolver(self._hosts(), credentials=creds if with_creds else None)
        with with_namespace(K8S_NAMESPACE):
            try:
                async with self.services.with_lease():
                    tracker = Tracker()
                    result = await _with_progress(
                        pull(
                            self.services,
                            name,
                            resolver,
                            platforms=[platforms.host()],
                            labels=labels,
                            snapshotter=self.config.snapshotter,
                            tracker=tracker,
                        ),
                        tracker,
                        self.config.image_pull_progress_timeout,
                    )
                    target = result.image.target
                    cfg = await image_config(
                        self.services.content_store(), target.media_type, target.digest
                    )
                    image_id = cfg.config_digest
                    names = [image_id]
                    if "@" not in name:
                        names.append(f"{name.rpartition(':')[0]}@{target.digest}")
                    store = self.services.image_store()
                    for extra in names:
                        await record_image(store, extra, target, labels)
            finally:
                await resolver.aclose()
        return image_id
