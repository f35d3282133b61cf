"""Containers from images or host directories (containerd's ``NewContainer`` and its options).

:func:`new_container` builds the OCI spec (the defaults of
:mod:`pycontainerd.client.oci`, then the image's config, then the caller's
options), prepares a writable snapshot named after the container on the
image's top chain ID (unpacking the image first when the snapshotter does
not have it yet), and stores the container record. With ``rootfs`` the
spec points at that host directory instead and no snapshot is made.
:func:`delete_container` removes the record and, by default, its snapshot.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from pycontainerd.client.oci import SPEC_TYPE_URL, generate_spec, spec_bytes
from pycontainerd.core import platforms
from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError
from pycontainerd.core.jsonload import load_json
from pycontainerd.core.types import AnyValue, Descriptor
from pycontainerd.remotes.pull import best_platform_match
from pycontainerd.remotes.unpack import chain_ids, descriptor_from_json, read_json, unpack

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from pycontainerd.client.oci import Spec, SpecOpt
    from pycontainerd.client.proxies import Services
    from pycontainerd.core.images import Image
    from pycontainerd.core.types import Mount

DEFAULT_RUNTIME: Final = "io.containerd.runc.v2"
STOP_SIGNAL_LABEL: Final = "io.containerd.image.config.stop-signal"
_INDEX_TYPES: Final = frozenset(
    {
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageConfig:
    """The parts of an image's config a container's spec takes.

    Attributes:
        env: ``KEY=VALUE`` entries.
        entrypoint: argv prefix.
        cmd: default arguments.
        working_dir: "" for ``/``.
        user: ``uid[:gid]`` or a name.
        stop_signal: e.g. ``SIGQUIT``; "" for the default.
        diff_ids: uncompressed layer digests, bottom first.
    """

    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    diff_ids: tuple[str, ...] = field(default=())

    @property
    def chain_id(self) -> str:
        """The top layer's chain ID (OCI: ``sha256(parent + " " + diff_id)`` upward)."""
        chains = chain_ids(self.diff_ids)
        return chains[-1] if chains else ""


async def image_manifest(
    client: Services, image: Image, platform: platforms.Platform | None = None
) -> Descriptor:
    """The manifest of ``image`` for ``platform`` (default: this host), through indexes.

    Raises:
        NotFoundError: no manifest for the platform.
    """
    want = platform or platforms.host()
    desc = image.target
    for _ in range(8):
        if desc.media_type not in _INDEX_TYPES:
            return desc
        index = await read_json(client.content_store(), desc)
        raw = index.get("manifests") or []
        if not isinstance(raw, list):
            msg = f"index {desc.digest}: manifests is not a list"
            raise InvalidArgumentError(msg)
        found = best_platform_match(want, [descriptor_from_json(m, desc.digest) for m in raw])
        if found is None:
            msg = f"no match for platform in manifest {desc.digest}: not found"
            raise NotFoundError(msg)
        desc = found
    msg = f"{image.name}: indexes nested too deeply"
    raise InvalidArgumentError(msg)


async def image_config(client: Services, manifest: Descriptor) -> ImageConfig:
    """The config of the image manifest ``manifest``."""
    store = client.content_store()
    doc = await read_json(store, manifest)
    cfg = await read_json(store, descriptor_from_json(doc.get("config"), manifest.digest))
    run = cfg.get("config")
    if not isinstance(run, dict):
        run = {}
    rootfs = cfg.get("rootfs")

    def strings(value: object) -> tuple[str, ...]:
        return tuple(str(v) for v in value) if isinstance(value, list) else ()

    return ImageConfig(
        env=strings(run.get("Env")),
        entrypoint=strings(run.get("Entrypoint")),
        cmd=strings(run.get("Cmd")),
        working_dir=str(run.get("WorkingDir") or ""),
        user=str(run.get("User") or ""),
        stop_signal=str(run.get("StopSignal") or ""),
        diff_ids=strings(rootfs.get("diff_ids") if isinstance(rootfs, dict) else None),
    )


async def ensure_unpacked(
    client: Services, manifest: Descriptor, config: ImageConfig, snapshotter: str
) -> str:
    """Unpack the image into ``snapshotter`` unless its top chain is there; return the chain ID."""
    chain = config.chain_id
    if not chain:
        return ""
    sn = client.snapshot_service(snapshotter)
    try:
        await sn.stat(chain)
    except NotFoundError:
        async with client.with_lease():
            await unpack(
                client.content_store(),
                sn,
                client.diff_service(),
                manifest,
                snapshotter_name=snapshotter,
            )
    return chain


def _replace_env(base: Sequence[str], overrides: Sequence[str]) -> list[str]:
    out = list(base)
    for entry in overrides:
        key = entry.split("=", 1)[0]
        out = [e for e in out if e.split("=", 1)[0] != key]
        out.append(entry)
    return out


def with_image_config(config: ImageConfig) -> SpecOpt:
    """Env, argv, working directory and numeric user from an image's config."""

    def opt(spec: Spec) -> None:
        process = spec["process"]
        process["env"] = _replace_env(process.get("env", []), config.env)
        process["args"] = [*config.entrypoint, *config.cmd]
        process["cwd"] = config.working_dir or "/"

    return opt


def _passwd_lookup(lines: Sequence[str], name: str, *, group: bool = False) -> tuple[int, int]:
    for line in lines:
        parts = line.split(":")
        if len(parts) >= 3 and (parts[0] == name or (group and parts[2] == name)):
            uid = int(parts[2])
            gid = int(parts[3]) if not group and len(parts) >= 4 else uid
            return uid, gid
    kind = "group" if group else "user"
    msg = f"no {kind} {name!r} found in the container's /etc/{'group' if group else 'passwd'}"
    raise NotFoundError(msg)


def rootfs_file(mounts: Sequence[Mount], rootfs_path: str, relpath: str) -> str | None:
    """Read ``relpath`` of a root filesystem without mounting it (None if absent).

    Looks in ``rootfs_path`` when given, else in a bind mount's source or an
    overlay's upper and lower directories, top first.
    """
    dirs: list[str] = []
    if rootfs_path:
        dirs.append(rootfs_path)
    for m in mounts:
        if m.type == "bind" or "rbind" in m.options or "bind" in m.options:
            dirs.append(m.source)
        elif m.type == "overlay":
            opts = dict(o.split("=", 1) for o in m.options if "=" in o)
            dirs += [opts["upperdir"]] if "upperdir" in opts else []
            dirs += opts.get("lowerdir", "").split(":")
    for d in filter(None, dirs):
        path = os.path.join(d, relpath)
        if os.path.lexists(
            os.path.join(d, os.path.dirname(relpath), ".wh." + os.path.basename(relpath))
        ):
            return None
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            continue
    return None


def resolve_user(user: str, mounts: Sequence[Mount] = (), rootfs_path: str = "") -> tuple[int, int]:
    """``uid[:gid]`` or ``name[:group]`` -> numeric ids (names from the rootfs's files).

    Raises:
        InvalidArgumentError: an empty part.
        NotFoundError: a name the container's ``/etc/passwd`` or ``/etc/group`` lacks.
    """
    name, sep, group = user.partition(":")
    if not name or (sep and not group):
        msg = f"invalid user {user!r}: expected <name|uid>[:<group|gid>]"
        raise InvalidArgumentError(msg)
    if name.isdigit():
        uid, gid = int(name), 0
    else:
        passwd = rootfs_file(mounts, rootfs_path, "etc/passwd")
        if passwd is None:
            msg = f"no user {name!r}: the container has no /etc/passwd"
            raise NotFoundError(msg)
        uid, gid = _passwd_lookup(passwd.splitlines(), name)
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            groups = rootfs_file(mounts, rootfs_path, "etc/group")
            if groups is None:
                msg = f"no group {group!r}: the container has no /etc/group"
                raise NotFoundError(msg)
            gid = _passwd_lookup(groups.splitlines(), group, group=True)[0]
    return uid, gid


async def new_container(
    client: Services,
    container_id: str,
    *,
    image: str = "",
    rootfs: str = "",
    snapshotter: str = "",
    runtime: str = DEFAULT_RUNTIME,
    labels: Mapping[str, str] | None = None,
    snapshot_labels: Mapping[str, str] | None = None,
    spec_opts: Sequence[SpecOpt] = (),
    user: str = "",
    platform: platforms.Platform | None = None,
) -> Container:
    """Create the container ``container_id`` from ``image`` or the host directory ``rootfs``.

    ``rootfs`` must be an absolute path (the runtime resolves it on the daemon's side).

    ``spec_opts`` apply after the image's config, so they win; ``user``
    (``uid[:gid]`` or names looked up in the root filesystem) is applied
    last. The snapshot (key = container id) is removed again if creating
    the record fails.

    Raises:
        InvalidArgumentError: neither or both of ``image`` and ``rootfs``.
    """
    if bool(image) == bool(rootfs):
        msg = "exactly one of an image or a rootfs directory must be given"
        raise InvalidArgumentError(msg)
    namespace = client.metadata()[0][1]
    opts: list[SpecOpt] = []
    all_labels = dict(labels or {})
    mounts: list[Mount] = []
    snapshot_key = ""
    snapshotter_name = ""
    image_name = ""
    # Under a lease, as the Go client's NewContainer: the new snapshot is
    # referenced by nothing until the record exists, and a collection in
    # between (after an image delete or an unpack's lease) removes it.
    async with client.with_lease():
        if image:
            img = await client.image_store().get(image)
            manifest = await image_manifest(client, img, platform)
            config = await image_config(client, manifest)
            snapshotter_name = snapshotter or client.snapshotter
            chain = await ensure_unpacked(client, manifest, config, snapshotter_name)
            opts.append(with_image_config(config))
            if config.stop_signal:
                all_labels.setdefault(STOP_SIGNAL_LABEL, config.stop_signal)
            sn = client.snapshot_service(snapshotter_name)
            mounts = await sn.prepare(container_id, chain, labels=snapshot_labels)
            snapshot_key = container_id
            image_name = img.name
            if not user and config.user:
                user = config.user
        else:
            from pycontainerd.client.oci import with_rootfs_path

            opts.append(with_rootfs_path(rootfs))
        try:
            opts.extend(spec_opts)
            if user:
                uid, gid = resolve_user(user, mounts, rootfs)
                from pycontainerd.client.oci import with_user_id

                opts.append(with_user_id(uid, gid))
            spec = generate_spec(namespace, container_id, *opts)
            record = Container(
                id=container_id,
                runtime=RuntimeInfo(name=runtime or DEFAULT_RUNTIME),
                labels=all_labels,
                image=image_name,
                spec=AnyValue(type_url=SPEC_TYPE_URL, value=spec_bytes(spec)),
                snapshotter=snapshotter_name,
                snapshot_key=snapshot_key,
            )
            return await client.container_store().create(record)
        except BaseException:
            if snapshot_key:
                sn = client.snapshot_service(snapshotter_name)
                with contextlib.suppress(Exception):  # the original error matters more
                    await sn.remove(snapshot_key)
            raise


def container_spec(container: Container) -> dict[str, Any]:
    """The OCI spec stored in a container record.

    Raises:
        InvalidArgumentError: the record has no spec or it is not JSON.
    """
    if container.spec is None or not container.spec.value:
        msg = f"container {container.id!r} has no spec"
        raise InvalidArgumentError(msg)
    try:
        return load_json(container.spec.value, dict)
    except ValueError as exc:
        msg = f"container {container.id!r} spec: {exc}"
        raise InvalidArgumentError(msg) from None


async def delete_container(
    client: Services, container_id: str, *, snapshot_cleanup: bool = True
) -> None:
    """Delete the record of ``container_id`` and, with ``snapshot_cleanup``, its snapshot."""
    store = client.container_store()
    container = await store.get(container_id)
    await store.delete(container_id)
    if snapshot_cleanup and container.snapshot_key:
        sn = client.snapshot_service(container.snapshotter or None)
        with contextlib.suppress(NotFoundError):
            await sn.remove(container.snapshot_key)
