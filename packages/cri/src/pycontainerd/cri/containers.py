"""CRI containers in pod sandboxes: create, start, stop, remove, status, list.

A container is a record in namespace ``k8s.io`` (label
``io.cri-containerd.kind=container``) on a snapshot of its image, created by
CreateContainer; StartContainer creates and starts its task through the
runtime v2 task manager, joining the pause container's network, IPC and UTS
namespaces (and PID namespace for POD mode) through ``/proc/<pause pid>/ns``,
with the sandbox's ``hostname``, ``hosts`` and ``resolv.conf`` bind-mounted.
StopContainer sends SIGTERM, waits ``timeout`` seconds, then SIGKILL.

First cut: no logs (stdio goes nowhere), no TTY or stdin, numeric users only,
no resources, devices, seccomp or capabilities from the config, state in
memory only (not restored after a daemon restart).

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycontainerd.core.containers import Container, RuntimeInfo
from pycontainerd.core.errdefs import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.core.types import AnyValue
from pycontainerd.cri.images import chain_id
from pycontainerd.cri.sandbox import K8S_NAMESPACE, KIND_LABEL, READY, SPEC_TYPE_URL
from pycontainerd.cri.spec import (
    DEFAULT_CAPS,
    MASKED_PATHS,
    READONLY_PATHS,
    cgroups_path,
    default_mounts,
)

if TYPE_CHECKING:
    from pycontainerd.cri.catalog import ImageCatalog
    from pycontainerd.cri.sandbox import PodSandbox, SandboxManager

log = logging.getLogger(__name__)

CREATED = "CONTAINER_CREATED"
RUNNING = "CONTAINER_RUNNING"
EXITED = "CONTAINER_EXITED"
CAP_SETS = ("bounding", "effective", "permitted")


@dataclass(slots=True)
class CriContainer:
    """One container as the CRI sees it."""

    id: str
    sandbox_id: str
    name: str
    metadata: dict[str, Any]
    image: str
    image_id: str
    labels: dict[str, str]
    annotations: dict[str, str]
    created_at: int
    spec: bytes = b""
    log_path: str = ""
    state: str = CREATED
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    pid: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    exited: asyncio.Event = field(default_factory=asyncio.Event)


def container_name(meta: dict[str, Any], sandbox: PodSandbox) -> str:
    """The reservation key of a container name in a pod (containerd's form)."""
    pod = sandbox.metadata
    return "_".join(
        str(p)
        for p in (
            meta.get("name", ""),
            pod.get("name", ""),
            pod.get("namespace", ""),
            pod.get("uid", ""),
            meta.get("attempt", 0),
        )
    )


def process_args(image_cfg: dict[str, Any], command: list[str], args: list[str]) -> list[str]:
    """The process arguments by Kubernetes' rule.

    ``command`` replaces the entrypoint (and drops the image's cmd); ``args``
    replaces the cmd.
    """
    entrypoint = list(image_cfg.get("Entrypoint") or [])
    cmd = list(image_cfg.get("Cmd") or [])
    if command:
        entrypoint, cmd = command, []
    if args:
        cmd = args
    return entrypoint + cmd


def merge_env(image_env: list[str], envs: list[dict[str, Any]]) -> list[str]:
    """The image's environment overridden by the config's ``envs``, order kept."""
    out: dict[str, str] = {}
    for item in image_env:
        key, _, value = item.partition("=")
        out[key] = value
    for kv in envs:
        out[str(kv.get("key", ""))] = str(kv.get("value", ""))
    return [f"{k}={v}" for k, v in out.items() if k]


def _user(image_user: str, sec: dict[str, Any]) -> tuple[int, int]:
    """The uid and gid: the security context's ``run_as_*``, else the image's numeric user."""
    u, _, g = image_user.partition(":")
    uid = int(u) if u.isdigit() else 0
    gid = int(g) if g.isdigit() else 0
    if "run_as_user" in sec:
        uid = int((sec["run_as_user"] or {}).get("value", 0))
    if "run_as_group" in sec:
        gid = int((sec["run_as_group"] or {}).get("value", 0))
    return uid, gid


def _namespaces(sb: PodSandbox, ns_opts: dict[str, Any]) -> list[dict[str, str]]:
    """Join the pause container's network, UTS and IPC namespaces; PID per the mode."""
    pause = f"/proc/{sb.pid}/ns"
    namespaces: list[dict[str, str]] = [{"type": "mount"}]
    if not sb.host_network:
        namespaces.append({"type": "network", "path": f"{pause}/net"})
    namespaces.append({"type": "uts", "path": f"{pause}/uts"})
    if sb.namespace_options.get("ipc") != 2:  # NODE: the host's
        namespaces.append({"type": "ipc", "path": f"{pause}/ipc"})
    pid_mode = int(ns_opts.get("pid", 0))
    if pid_mode == 0:  # POD: share the pause container's
        namespaces.append({"type": "pid", "path": f"{pause}/pid"})
    elif pid_mode == 1:  # CONTAINER: one of its own
        namespaces.append({"type": "pid"})
    return namespaces


class ContainerManager:
    """The containers of every sandbox; their state in memory."""

    def __init__(self, sandboxes: SandboxManager, catalog: ImageCatalog) -> None:
        self.sandboxes = sandboxes
        self.catalog = catalog
        self.containers: dict[str, CriContainer] = {}
        self.names: dict[str, str] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    def get(self, id_or_prefix: str) -> CriContainer:
        """A container by id or unique prefix.

        Raises:
            NotFoundError: none matches.
        """
        if id_or_prefix in self.containers:
            return self.containers[id_or_prefix]
        found = [
            c for k, c in self.containers.items() if id_or_prefix and k.startswith(id_or_prefix)
        ]
        if len(found) == 1:
            return found[0]
        msg = f"an error occurred when try to find container {go_quote(id_or_prefix)}"
        raise NotFoundError(msg)

    def select(
        self,
        *,
        cid: str = "",
        sandbox_id: str = "",
        state: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> list[CriContainer]:
        return [
            c
            for c in self.containers.values()
            if (not cid or c.id.startswith(cid))
            and (not sandbox_id or c.sandbox_id.startswith(sandbox_id))
            and (state is None or c.state == state)
            and not (labels and any(c.labels.get(k) != v for k, v in labels.items()))
        ]

    async def create(self, sandbox_id: str, config: dict[str, Any]) -> CriContainer:
        """CreateContainer: the record and its snapshot (the task comes with Start).

        Raises:
            NotFoundError: no such sandbox, or the image is not present.
            FailedPreconditionError: the sandbox is not ready.
            AlreadyExistsError: the name is taken in the pod (upstream's text).
            InvalidArgumentError: no metadata.
        """
        sb = await self.sandboxes.refresh(self.sandboxes.get(sandbox_id))
        if sb.state != READY:
            msg = f"sandbox container {go_quote(sb.id)} is not running"
            raise FailedPreconditionError(msg)
        meta = config.get("metadata") or {}
        if not meta.get("name"):
            msg = "container config must include metadata"
            raise InvalidArgumentError(msg)
        name = container_name(meta, sb)
        if name in self.names:
            msg = (
                f"failed to reserve container name {go_quote(name)}: "
                f"name {go_quote(name)} is reserved for {go_quote(self.names[name])}"
            )
            raise AlreadyExistsError(msg)
        image_ref = str((config.get("image") or {}).get("image", ""))
        img = await self.catalog.find(image_ref)
        if img is None:
            msg = f"failed to resolve image {go_quote(image_ref)}: not found"
            raise NotFoundError(msg)
        cid = secrets.token_hex(32)
        self.names[name] = cid
        try:
            c = await self._create(cid, name, sb, config, meta, image_ref, img.id, img.config)
        except BaseException:
            self.names.pop(name, None)
            raise
        self.containers[cid] = c
        return c

    async def _create(  # noqa: PLR0917
        self,
        cid: str,
        name: str,
        sb: PodSandbox,
        config: dict[str, Any],
        meta: dict[str, Any],
        image_ref: str,
        image_id: str,
        image_config: dict[str, object],
    ) -> CriContainer:
        proc_cfg = image_config.get("config")
        icfg: dict[str, Any] = proc_cfg if isinstance(proc_cfg, dict) else {}
        rootfs = image_config.get("rootfs")
        diff_ids = list(rootfs.get("diff_ids") or []) if isinstance(rootfs, dict) else []
        args = process_args(icfg, list(config.get("command") or []), list(config.get("args") or []))
        if not args:
            msg = "no command specified"
            raise InvalidArgumentError(msg)
        linux = config.get("linux") or {}
        sec = linux.get("security_context") or {}
        uid, gid = _user(str(icfg.get("User") or ""), sec)
        namespaces = _namespaces(sb, sec.get("namespace_options") or {})
        files = self.sandboxes.sandboxes_dir / sb.id
        mounts = default_mounts()
        for fname in ("hostname", "hosts", "resolv.conf"):
            mounts.append(
                {
                    "destination": f"/etc/{fname}",
                    "type": "bind",
                    "source": str(files / fname),
                    "options": ["rbind", "rprivate", "ro" if sec.get("readonly_rootfs") else "rw"],
                }
            )
        for m in config.get("mounts") or []:
            mounts.append(
                {
                    "destination": str(m.get("container_path", "")),
                    "type": "bind",
                    "source": str(m.get("host_path", "")),
                    "options": ["rbind", "rprivate", "ro" if m.get("readonly") else "rw"],
                }
            )
        sb_linux = sb.config.get("linux") or {}
        runtime = self.sandboxes.config.runtime_for(sb.runtime_handler)
        hostname_file = files / "hostname"
        hostname = hostname_file.read_text().strip() if hostname_file.is_file() else ""
        spec = {
            "ociVersion": "1.1.0",
            "process": {
                "terminal": False,
                "user": {"uid": uid, "gid": gid},
                "args": args,
                "env": merge_env(list(icfg.get("Env") or []), list(config.get("envs") or [])),
                "cwd": str(config.get("working_dir") or icfg.get("WorkingDir") or "/"),
                "capabilities": {k: list(DEFAULT_CAPS) for k in CAP_SETS},
                "noNewPrivileges": bool(sec.get("no_new_privs", False)),
            },
            "root": {"path": "rootfs", "readonly": bool(sec.get("readonly_rootfs", False))},
            "hostname": hostname,
            "mounts": mounts,
            "annotations": {
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": str(meta.get("name", "")),
                "io.kubernetes.cri.sandbox-id": sb.id,
                "io.kubernetes.cri.image-name": image_ref,
            },
            "linux": {
                "namespaces": namespaces,
                "cgroupsPath": cgroups_path(
                    str(sb_linux.get("cgroup_parent") or ""), cid, systemd=runtime.systemd_cgroup
                ),
                "resources": {"devices": [{"allow": False, "access": "rwm"}]},
                "maskedPaths": list(MASKED_PATHS),
                "readonlyPaths": list(READONLY_PATHS),
            },
        }  # fmt: skip
        spec_bytes = json.dumps(spec).encode()
        log_dir = str(sb.config.get("log_directory") or "")
        log_path = str(config.get("log_path") or "")
        c = CriContainer(
            id=cid,
            sandbox_id=sb.id,
            name=name,
            metadata={"name": str(meta.get("name", "")), "attempt": int(meta.get("attempt", 0))},
            image=image_ref,
            image_id=image_id,
            labels=dict(config.get("labels") or {}),
            annotations=dict(config.get("annotations") or {}),
            created_at=time.time_ns(),
            spec=spec_bytes,
            log_path=f"{log_dir.rstrip('/')}/{log_path}" if log_dir and log_path else log_path,
            config=config,
        )
        md = self.sandboxes.md
        snapshotter = self.sandboxes.config.snapshotter
        with with_namespace(K8S_NAMESPACE):
            snap = md.snapshotter(snapshotter)
            await snap.prepare(cid, chain_id(diff_ids))
            try:
                await md.container_store().create(
                    Container(
                        id=cid,
                        runtime=RuntimeInfo(name=runtime.runtime_type),
                        labels={KIND_LABEL: "container", **c.labels},
                        image=image_ref,
                        spec=AnyValue(type_url=SPEC_TYPE_URL, value=spec_bytes),
                        snapshotter=snapshotter,
                        snapshot_key=cid,
                    )
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await snap.remove(cid)
                raise
        return c

    async def start(self, id_or_prefix: str) -> None:
        """StartContainer: create and start the task; its exit is watched.

        Raises:
            NotFoundError: no such container.
            FailedPreconditionError: it is not in the CREATED state.
        """
        from pycontainerd.api.convert import mount_to_proto
        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        c = self.get(id_or_prefix)
        if c.state != CREATED:
            msg = f"container {go_quote(c.id)} is in {c.state} state"
            raise FailedPreconditionError(msg)
        md = self.sandboxes.md
        with with_namespace(K8S_NAMESPACE):
            mounts = await md.snapshotter(self.sandboxes.config.snapshotter).mounts(c.id)
        sb = self.sandboxes.get(c.sandbox_id)
        runtime = self.sandboxes.config.runtime_for(sb.runtime_handler)
        tasks = self.sandboxes.tasks
        t = await tasks.create(
            K8S_NAMESPACE,
            c.id,
            spec=c.spec,
            runtime=runtime.runtime_type,
            rootfs=[mount_to_proto(m) for m in mounts],
        )
        try:
            await t.call("Start", shim.StartRequest(id=c.id))
        except BaseException:
            with contextlib.suppress(Exception):
                await tasks.delete(K8S_NAMESPACE, c.id)
            raise
        c.pid = t.pid
        c.started_at = time.time_ns()
        c.state = RUNNING
        watcher = asyncio.get_running_loop().create_task(self._watch(c))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, c: CriContainer) -> None:
        tasks = self.sandboxes.tasks
        try:
            resp = await tasks.get(K8S_NAMESPACE, c.id).wait()
            c.exit_code = int(resp.exit_status)
            ts = resp.exited_at
            c.finished_at = ts.seconds * 1_000_000_000 + ts.nanos if ts.seconds else time.time_ns()
        except Exception:
            log.exception("container %s: waiting for its exit", c.id)
            c.finished_at = time.time_ns()
        c.reason = "Completed" if c.exit_code == 0 else "Error"
        c.state = EXITED
        c.exited.set()

    async def stop(self, id_or_prefix: str, timeout: float) -> None:  # noqa: ASYNC109
        """StopContainer: SIGTERM, ``timeout`` seconds, then SIGKILL. Idempotent."""
        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        try:
            c = self.get(id_or_prefix)
        except NotFoundError:
            return
        if c.state != RUNNING:
            return
        t = self.sandboxes.tasks.get(K8S_NAMESPACE, c.id)
        if timeout > 0:
            with contextlib.suppress(NotFoundError):
                await t.call("Kill", shim.KillRequest(id=c.id, signal=int(signal.SIGTERM)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.exited.wait(), timeout)
        if not c.exited.is_set():
            with contextlib.suppress(NotFoundError):
                await t.call(
                    "Kill", shim.KillRequest(id=c.id, signal=int(signal.SIGKILL), all=True)
                )
            await c.exited.wait()

    async def remove(self, id_or_prefix: str) -> None:
        """RemoveContainer: stop it if running, then task, record, snapshot. Idempotent."""
        try:
            c = self.get(id_or_prefix)
        except NotFoundError:
            return
        await self.stop(c.id, 0)
        tasks = self.sandboxes.tasks
        if tasks.exists(K8S_NAMESPACE, c.id):
            with contextlib.suppress(NotFoundError):
                await tasks.delete(K8S_NAMESPACE, c.id)
        md = self.sandboxes.md
        with with_namespace(K8S_NAMESPACE):
            with contextlib.suppress(NotFoundError):
                await md.container_store().delete(c.id)
            with contextlib.suppress(NotFoundError):
                await md.snapshotter(self.sandboxes.config.snapshotter).remove(c.id)
        self.containers.pop(c.id, None)
        if self.names.get(c.name) == c.id:
            del self.names[c.name]

    async def stop_in(self, sandbox_id: str) -> None:
        for c in self.select(sandbox_id=sandbox_id):
            await self.stop(c.id, 0)

    async def remove_in(self, sandbox_id: str) -> None:
        for c in self.select(sandbox_id=sandbox_id):
            await self.remove(c.id)
