"""Pod sandboxes: a pause container in a pinned network namespace set up by CNI.

RunPodSandbox, in order, each step undone when a later one fails, so a failed
run leaves nothing behind: reserve the name; resolve ``sandbox_image``;
create and pin the network namespace (not for hostNetwork); prepare the pause
container's snapshot; store its container record (namespace ``k8s.io``, label
``io.cri-containerd.kind=sandbox``); create and start its task through the
runtime v2 task manager. CNI ADD of the pinned namespace runs alongside the
steps after it (it only fills the namespace the pause container joins); the
run answers once both are done.

Stop kills the pause task (SIGKILL, as containerd does for sandboxes) and
deletes it while CNI DEL runs, then removes the namespace; it is idempotent. Remove stops
first if needed, then drops the snapshot and the record; removing an unknown
sandbox succeeds (the CRI asks removal to be idempotent).

Each sandbox's CRI state is kept, as JSON, in an extension of its pause
container's record (``io.cri-containerd.sandbox.metadata``) and rewritten when
it stops, so :meth:`SandboxManager.restore` rebuilds the sandboxes after a
daemon restart (ready when the pause task, reconnected by the task manager,
still runs).

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import secrets
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    ContainerdError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnknownError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.core.types import AnyValue
from pycontainerd.cri import netns
from pycontainerd.cri.cni import Attachment, Cni, CniError, CniNotReadyError
from pycontainerd.cri.files import mount_shm, unmount_shm, write_sandbox_files
from pycontainerd.cri.images import ImageConfig, image_config, normalize
from pycontainerd.cri.spec import cgroups_path, parse_user, sandbox_spec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from pycontainerd.cri.config import CriConfig
    from pycontainerd.cri.pull import ImagePuller
    from pycontainerd.metadata.metadata import Metadata
    from pycontainerd.runtime.manager import TaskManager

log = logging.getLogger(__name__)

K8S_NAMESPACE = "k8s.io"
KIND_LABEL = "io.cri-containerd.kind"
SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
READY = "SANDBOX_READY"
NOTREADY = "SANDBOX_NOTREADY"
STOP_TIMEOUT = 10.0
METADATA_EXTENSION = "io.cri-containerd.sandbox.metadata"
METADATA_TYPE_URL = "pycontainerd.cri.v1.PodSandbox"


@dataclass(slots=True)
class PodSandbox:
    """One pod sandbox as the CRI sees it."""

    id: str
    name: str
    metadata: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str]
    runtime_handler: str
    created_at: int
    host_network: bool
    netns_path: str = ""
    ips: list[str] = field(default_factory=list)
    cni_results: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: str = READY
    pid: int = 0
    namespace_options: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The persisted form (everything but the pid, which comes from the task)."""
        data = dataclasses.asdict(self)
        data.pop("pid")
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> PodSandbox:
        """Read the persisted form back.

        Raises:
            ValueError: not a persisted sandbox.
        """
        data = json.loads(raw)
        if not isinstance(data, dict):
            msg = "sandbox metadata is not a JSON object"
            raise ValueError(msg)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def extension(self) -> AnyValue:
        return AnyValue(type_url=METADATA_TYPE_URL, value=self.to_json())


def sandbox_name(meta: dict[str, Any]) -> str:
    """Containerd's reservation key: ``name_namespace_uid_attempt``."""
    parts = (meta.get("name", ""), meta.get("namespace", ""), meta.get("uid", ""))
    return "_".join([*map(str, parts), str(meta.get("attempt", 0))])


class SandboxManager:
    """Runs, stops and removes pod sandboxes; holds their state."""

    def __init__(
        self, config: CriConfig, md: Metadata, tasks: TaskManager, state: Path, root: Path
    ) -> None:
        self.config = config
        self.md = md
        self.tasks = tasks
        self.state = state
        self.netns_dir = state / "netns"
        self.sandboxes_dir = root / "sandboxes"
        self.cni = Cni(config.cni.conf_dir, config.cni.bin_dir, config.cni.max_conf_num)
        self.sandboxes: dict[str, PodSandbox] = {}
        self.names: dict[str, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.puller: ImagePuller | None = None
        """Pulls ``sandbox_image`` when it is missing (set by the plugin)."""

    def _lock(self, sid: str) -> asyncio.Lock:
        return self._locks.setdefault(sid, asyncio.Lock())

    # -- lookups --------------------------------------------------------------

    def get(self, id_or_prefix: str) -> PodSandbox:
        """A sandbox by id or unique id prefix.

        Raises:
            NotFoundError: none (or no unique one) matches.
        """
        if id_or_prefix in self.sandboxes:
            return self.sandboxes[id_or_prefix]
        found = [
            s for k, s in self.sandboxes.items() if id_or_prefix and k.startswith(id_or_prefix)
        ]
        if len(found) == 1:
            return found[0]
        msg = f"an error occurred when try to find sandbox {go_quote(id_or_prefix)}"
        raise NotFoundError(msg)

    def select(
        self, *, sid: str = "", state: str | None = None, labels: dict[str, str] | None = None
    ) -> list[PodSandbox]:
        out: list[PodSandbox] = []
        for sb in self.sandboxes.values():
            if sid and not sb.id.startswith(sid):
                continue
            if state is not None and sb.state != state:
                continue
            if labels and any(sb.labels.get(k) != v for k, v in labels.items()):
                continue
            out.append(sb)
        return out

    # -- run ------------------------------------------------------------------

    async def run(
        self, config: dict[str, Any], runtime_handler: str, host_network: bool
    ) -> PodSandbox:
        """Create and start a sandbox from a CRI PodSandboxConfig (as a dict).

        Raises:
            InvalidArgumentError: no metadata or an unknown runtime handler.
            AlreadyExistsError: the name is taken (upstream's text).
            NotFoundError: the sandbox image is not in the ``k8s.io`` namespace.
            FailedPreconditionError: the network is not ready (no CNI config).
            UnknownError: CNI or the runtime failed; everything was undone.
        """
        meta = config.get("metadata") or {}
        if not meta.get("name"):
            msg = "sandbox config must include metadata"
            raise InvalidArgumentError(msg)
        try:
            runtime = self.config.runtime_for(runtime_handler)
        except KeyError:
            msg = (
                "failed to get sandbox runtime: "
                f"no runtime for {go_quote(runtime_handler)} is configured"
            )
            raise InvalidArgumentError(msg) from None
        name = sandbox_name(meta)
        sid = secrets.token_hex(32)
        if name in self.names:
            msg = (
                f"failed to reserve sandbox name {go_quote(name)}: "
                f"name {go_quote(name)} is reserved for {go_quote(self.names[name])}"
            )
            raise AlreadyExistsError(msg)
        self.names[name] = sid
        undo: list[Callable[[], Awaitable[object]]] = []
        try:
            sb = await self._run(
                sid,
                name=name,
                meta=meta,
                config=config,
                handler=runtime_handler,
                runtime=runtime,
                host_network=host_network,
                undo=undo,
            )
        except BaseException:
            for step in reversed(undo):
                try:
                    await step()
                except Exception:
                    log.exception("cleanup after a failed RunPodSandbox %s", sid)
            self.names.pop(name, None)
            raise
        self.sandboxes[sid] = sb
        return sb

    async def _run(
        self,
        sid: str,
        *,
        name: str,
        meta: dict[str, Any],
        config: dict[str, Any],
        handler: str,
        runtime: Any,
        host_network: bool,
        undo: list[Callable[[], Awaitable[object]]],
    ) -> PodSandbox:
        with with_namespace(K8S_NAMESPACE):
            image_name = normalize(self.config.sandbox_image)
            try:
                image = await self.md.image_store().get(image_name)
            except NotFoundError:
                image = None
            if image is None and self.puller is not None:
                await self.puller.pull(image_name)
                image = await self.md.image_store().get(image_name)
            if image is None:
                msg = (
                    f"failed to get sandbox image {go_quote(self.config.sandbox_image)}: "
                    f"image {go_quote(image_name)} not found in namespace {go_quote(K8S_NAMESPACE)}"
                )
                raise NotFoundError(msg)
            img = await image_config(
                self.md.content_store(), image.target.media_type, image.target.digest
            )
        linux = config.get("linux") or {}
        sec = linux.get("security_context") or {}
        ns_opts = sec.get("namespace_options") or {}
        sb = PodSandbox(
            id=sid,
            name=name,
            metadata=meta,
            labels=dict(config.get("labels") or {}),
            annotations=dict(config.get("annotations") or {}),
            runtime_handler=handler,
            created_at=time.time_ns(),
            host_network=host_network,
            namespace_options={k: int(v) for k, v in ns_opts.items() if isinstance(v, int)},
            config=config,
        )
        network: asyncio.Task[None] | None = None
        if not host_network:
            # The namespace must exist before the pause container joins it; CNI
            # ADD only fills it, so it runs while the shim and runc start.
            await self._create_netns(sb, undo)
            network = asyncio.create_task(self._setup_network(sb, undo))

        async def networked() -> None:
            if network is not None:
                await network
                await self._persist(sb)  # the record was written before CNI's results

        try:
            await self._start_pause(
                sb,
                img=img,
                image_name=image_name,
                config=config,
                runtime=runtime,
                undo=undo,
                alongside_start=networked,
            )
        except BaseException:
            if network is not None:
                # let ADD finish (and register its undo) before anything is undone
                with contextlib.suppress(BaseException):
                    await asyncio.shield(network)
            raise
        return sb

    async def _start_pause(
        self,
        sb: PodSandbox,
        *,
        img: ImageConfig,
        image_name: str,
        config: dict[str, Any],
        runtime: Any,
        undo: list[Callable[[], Awaitable[object]]],
        alongside_start: Callable[[], Awaitable[None]],
    ) -> None:
        """Files, /dev/shm, snapshot, record, then the pause task, created and started.

        ``alongside_start`` runs while the task starts (both finish before
        this returns, or raises the first failure).
        """
        sid = sb.id
        meta = sb.metadata
        host_network = sb.host_network
        linux = config.get("linux") or {}
        ns_opts = (linux.get("security_context") or {}).get("namespace_options") or {}
        try:
            uid_gid = parse_user(img.user)
        except ValueError:
            uid_gid = (65535, 65535) if img.user else (0, 0)
        args = [*img.entrypoint, *img.cmd] or ["/pause"]
        files_dir = self.sandboxes_dir / sid
        undo.append(lambda: asyncio.to_thread(shutil.rmtree, files_dir, True))
        hostname = await asyncio.to_thread(
            write_sandbox_files,
            files_dir,
            hostname=str(config.get("hostname") or ""),
            dns=dict(config.get("dns_config") or {}),
            host_network=host_network,
        )
        shm = files_dir / "shm"
        host_ipc = ns_opts.get("ipc") == 2
        if not host_ipc:
            await asyncio.to_thread(mount_shm, shm)
            undo.append(lambda: asyncio.to_thread(unmount_shm, shm))
        spec = sandbox_spec(
            args=args,
            env=list(img.env),
            user=uid_gid,
            hostname=hostname,
            netns=sb.netns_path or None,
            cgroups=cgroups_path(
                str(linux.get("cgroup_parent") or ""), sid, systemd=runtime.systemd_cgroup
            ),
            sysctls={str(k): str(v) for k, v in (linux.get("sysctls") or {}).items()},
            host_pid=ns_opts.get("pid") == 2,
            host_ipc=ns_opts.get("ipc") == 2,
            annotations={
                "io.kubernetes.cri.container-type": "sandbox",
                "io.kubernetes.cri.sandbox-id": sid,
                "io.kubernetes.cri.sandbox-name": str(meta.get("name", "")),
                "io.kubernetes.cri.sandbox-namespace": str(meta.get("namespace", "")),
                "io.kubernetes.cri.sandbox-uid": str(meta.get("uid", "")),
            },
        )
        # the pod's /dev/shm (the host's with host IPC), shared with its containers
        spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != "/dev/shm"]  # noqa: S108
        spec["mounts"].append(
            {
                "destination": "/dev/shm",  # noqa: S108
                "type": "bind",
                "source": "/dev/shm" if host_ipc else str(shm),  # noqa: S108
                "options": ["rbind", "rw", "nosuid", "nodev", "noexec"],
            }
        )
        spec_bytes = json.dumps(spec).encode()
        async with self.lease():
            snap = self.md.snapshotter(self.config.snapshotter)
            mounts = await snap.prepare(sid, img.chain_id)
            undo.append(lambda: self._in_ns(snap.remove(sid)))
            await self.md.container_store().create(
                Container(
                    id=sid,
                    runtime=RuntimeInfo(name=runtime.runtime_type),
                    labels={KIND_LABEL: "sandbox", **sb.labels},
                    image=image_name,
                    spec=AnyValue(type_url=SPEC_TYPE_URL, value=spec_bytes),
                    snapshotter=self.config.snapshotter,
                    snapshot_key=sid,
                    extensions={METADATA_EXTENSION: sb.extension()},
                )
            )
            undo.append(lambda: self._in_ns(self.md.container_store().delete(sid)))
        from pycontainerd.api.convert import mount_to_proto
        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        t = await self.tasks.create(
            K8S_NAMESPACE,
            sid,
            spec=spec_bytes,
            runtime=runtime.runtime_type,
            rootfs=[mount_to_proto(m) for m in mounts],
        )
        undo.append(lambda: self._delete_task(sid))
        results = await asyncio.gather(
            t.call("Start", shim.StartRequest(id=sid)), alongside_start(), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        sb.pid = t.pid

    async def _create_netns(
        self, sb: PodSandbox, undo: list[Callable[[], Awaitable[object]]]
    ) -> None:
        """Create and pin the pod's network namespace."""
        path = self.netns_dir / sb.id
        await netns.create(path)
        undo.append(lambda: asyncio.to_thread(netns.remove, path))
        sb.netns_path = str(path)

    async def _setup_network(
        self, sb: PodSandbox, undo: list[Callable[[], Awaitable[object]]]
    ) -> None:
        """ADD the pod's (pinned) namespace to the CNI networks."""
        att = self._attachment(sb)
        try:
            results = await self.cni.add(att)
        except CniNotReadyError as exc:
            msg = f"failed to setup network for sandbox {go_quote(sb.id)}: {exc}"
            raise FailedPreconditionError(msg) from exc
        except CniError as exc:
            msg = f"failed to setup network for sandbox {go_quote(sb.id)}: {exc}"
            raise UnknownError(msg) from exc
        sb.cni_results = {r.network: r.result for r in results}
        undo.append(lambda: self._cni_del(sb))
        sb.ips = [ip for r in results for ip in r.ips]

    async def _in_ns(self, coro: Any) -> None:
        with with_namespace(K8S_NAMESPACE):
            await coro

    def _attachment(self, sb: PodSandbox) -> Attachment:
        meta = sb.metadata
        ports = []
        for pm in sb.config.get("port_mappings") or []:
            if int(pm.get("host_port", 0) or 0) <= 0:
                continue
            ports.append(
                {
                    "hostPort": int(pm["host_port"]),
                    "containerPort": int(pm.get("container_port", 0)),
                    "protocol": {0: "tcp", 1: "udp", 2: "sctp"}.get(
                        int(pm.get("protocol", 0)), "tcp"
                    ),
                    "hostIP": str(pm.get("host_ip", "")),
                }
            )
        return Attachment(
            container_id=sb.id,
            netns=sb.netns_path,
            args=(
                ("K8S_POD_NAMESPACE", str(meta.get("namespace", ""))),
                ("K8S_POD_NAME", str(meta.get("name", ""))),
                ("K8S_POD_INFRA_CONTAINER_ID", sb.id),
                ("K8S_POD_UID", str(meta.get("uid", ""))),
            ),
            port_mappings=tuple(ports),
        )

    async def _cni_del(self, sb: PodSandbox) -> None:
        if not sb.netns_path:
            return
        try:
            await self.cni.delete(self._attachment(sb), sb.cni_results)
        except CniNotReadyError:
            log.warning("sandbox %s: no CNI config left to tear its network down", sb.id)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[str]:
        """A lease (namespace ``k8s.io``, 24 h expiry) for the block, deleted after it.

        Snapshots prepared in the block belong to it, so the garbage collector
        cannot take them before the container record that references them
        exists (as containerd's client leases container creation).
        """
        from datetime import UTC, datetime, timedelta

        from pycontainerd.core import namespaces

        until = (datetime.now(UTC) + timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
        with with_namespace(K8S_NAMESPACE):
            manager = self.md.lease_store()
            lease = await manager.create(labels={"containerd.io/gc.expire": until})
        try:
            with with_namespace(K8S_NAMESPACE), namespaces.with_lease(lease.id):
                yield lease.id
        finally:
            with with_namespace(K8S_NAMESPACE), contextlib.suppress(NotFoundError):
                await manager.delete(lease.id)

    async def check_network(self, sb: PodSandbox) -> str:
        """CNI CHECK of a ready pod's networks: ``""`` when they are fine, else the problem."""
        if not sb.netns_path or sb.state != READY:
            return ""
        try:
            await self.cni.check(self._attachment(sb), sb.cni_results)
        except CniError as exc:
            return str(exc)
        return ""

    async def _delete_task(self, sid: str) -> None:
        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        if not self.tasks.exists(K8S_NAMESPACE, sid):
            return
        t = self.tasks.get(K8S_NAMESPACE, sid)
        with contextlib.suppress(NotFoundError):
            await t.call("Kill", shim.KillRequest(id=sid, signal=int(signal.SIGKILL), all=True))
        with contextlib.suppress(NotFoundError):
            await asyncio.wait_for(t.wait(), STOP_TIMEOUT)
        with contextlib.suppress(NotFoundError):
            await self.tasks.delete(K8S_NAMESPACE, sid)

    # -- stop / remove ----------------------------------------------------------

    async def stop(self, id_or_prefix: str) -> None:
        """Stop a sandbox: its task, its network, its namespace. Idempotent.

        An unknown sandbox is not an error either: the CRI asks StopPodSandbox
        to succeed once the resources are reclaimed (containerd 1.6 answers
        NotFound, which critest's idempotence spec rejects).

        Raises:
            UnknownError: CNI DEL failed (the call may be retried).
        """
        try:
            sb = self.get(id_or_prefix)
        except NotFoundError:
            return
        async with self._lock(sb.id):
            # CNI DEL empties the (still pinned) namespace while the pause task
            # goes away: the two do not depend on each other.
            task_done, net_done = await asyncio.gather(
                self._delete_task(sb.id), self._cni_del(sb), return_exceptions=True
            )
            if isinstance(task_done, BaseException):
                raise task_done
            sb.state = NOTREADY
            if sb.netns_path:
                if isinstance(net_done, CniError):
                    msg = f"failed to destroy network for sandbox {go_quote(sb.id)}: {net_done}"
                    raise UnknownError(msg) from net_done
                if isinstance(net_done, BaseException):
                    raise net_done
            shm = asyncio.to_thread(unmount_shm, self.sandboxes_dir / sb.id / "shm")
            if sb.netns_path:
                await asyncio.gather(asyncio.to_thread(netns.remove, Path(sb.netns_path)), shm)
                sb.netns_path = ""
            else:
                await shm
            sb.ips = []
            sb.cni_results = {}
            await self._persist(sb)

    async def _persist(self, sb: PodSandbox) -> None:
        with with_namespace(K8S_NAMESPACE):
            store = self.md.container_store()
            try:
                current = await store.get(sb.id)
            except NotFoundError:
                return
            extensions = {**current.extensions, METADATA_EXTENSION: sb.extension()}
            await store.update(dataclasses.replace(current, extensions=extensions), "extensions")

    async def restore(self) -> None:
        """Rebuild the sandboxes from the pause containers' records (daemon start).

        A record without readable CRI metadata is skipped with a warning. A
        sandbox whose pause task is gone is NOTREADY; its network is torn down
        by StopPodSandbox or RemovePodSandbox as usual.
        """
        with with_namespace(K8S_NAMESPACE):
            records = await self.md.container_store().list()
        for c in records:
            if c.labels.get(KIND_LABEL) != "sandbox":
                continue
            ext = c.extensions.get(METADATA_EXTENSION)
            try:
                if ext is None:
                    raise ValueError(METADATA_EXTENSION)
                sb = PodSandbox.from_json(ext.value)
            except (ValueError, TypeError):
                log.warning("sandbox %s: no readable CRI metadata, not restored", c.id)
                continue
            sb.pid = 0
            if self.tasks.exists(K8S_NAMESPACE, sb.id):
                sb.pid = self.tasks.get(K8S_NAMESPACE, sb.id).pid
            else:
                sb.state = NOTREADY
            await self.refresh(sb)
            self.sandboxes[sb.id] = sb
            self.names[sb.name] = sb.id
        await asyncio.to_thread(self._remove_orphan_netns)

    def _remove_orphan_netns(self) -> None:
        """Unpin namespaces no sandbox owns (left by a crash between create and record)."""
        owned = {sb.netns_path for sb in self.sandboxes.values() if sb.netns_path}
        if not self.netns_dir.is_dir():
            return
        for path in self.netns_dir.iterdir():
            if str(path) not in owned:
                log.warning("removing orphan network namespace %s", path.name)
                try:
                    netns.remove(path)
                except netns.NetnsError:
                    log.exception("orphan network namespace %s", path.name)

    async def remove(self, id_or_prefix: str) -> None:
        """Stop (if needed) and remove a sandbox; an unknown one is not an error."""
        try:
            sb = self.get(id_or_prefix)
        except NotFoundError:
            return
        await self.stop(sb.id)
        async with self._lock(sb.id):
            files = asyncio.to_thread(shutil.rmtree, self.sandboxes_dir / sb.id, True)
            await asyncio.gather(self._remove_record(sb.id), files)
            self.sandboxes.pop(sb.id, None)
            if self.names.get(sb.name) == sb.id:
                del self.names[sb.name]
        self._locks.pop(sb.id, None)

    async def _remove_record(self, sid: str) -> None:
        """Delete the pause container's record, then its snapshot (either may be gone)."""
        with with_namespace(K8S_NAMESPACE):
            with contextlib.suppress(NotFoundError):
                await self.md.container_store().delete(sid)
            with contextlib.suppress(NotFoundError):
                await self.md.snapshotter(self.config.snapshotter).remove(sid)

    async def refresh(self, sb: PodSandbox) -> PodSandbox:
        """Mark a sandbox NOTREADY when its pause task is gone or exited."""
        if sb.state != READY:
            return sb
        try:
            t = self.tasks.get(K8S_NAMESPACE, sb.id)
            st = await t.state()
        except (NotFoundError, ContainerdError):
            sb.state = NOTREADY
            return sb
        if int(st.status) not in (1, 2):  # CREATED, RUNNING
            sb.state = NOTREADY
        return sb

    async def aclose(self) -> None:
        """Nothing to release: pods outlive the daemon (their shims keep running)."""
        return
