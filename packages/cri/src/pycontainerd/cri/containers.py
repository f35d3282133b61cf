"""CRI containers in pod sandboxes: create, start, stop, remove, status, list.

A container is a record in namespace ``k8s.io`` (label
``io.cri-containerd.kind=container``) on a snapshot of its image, created by
CreateContainer; StartContainer creates and starts its task through the
runtime v2 task manager, joining the pause container's network, IPC and UTS
namespaces (and PID namespace for POD mode) through ``/proc/<pause pid>/ns``,
with the sandbox's ``hostname``, ``hosts`` and ``resolv.conf`` bind-mounted.
StopContainer sends SIGTERM, waits ``timeout`` seconds, then SIGKILL.

The OCI spec comes from the image config and the CRI config: users and
groups, capabilities, seccomp, devices and privileged mode through
:mod:`pycontainerd.cri.security`; the pod's ``/dev/shm``; resources; TTY.
Output goes to the CRI log; state is kept in the container record and
restored after a daemon restart. No stdin yet (attach is the streaming
server's).

Importing this module must not import grpc.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
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
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycontainerd.core.gostr import go_quote
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.core.oci import DEFAULT_CAPABILITIES, MASKED_PATHS, READONLY_PATHS
from pycontainerd.core.types import AnyValue
from pycontainerd.cri import apparmor, cio, security
from pycontainerd.cri.attach import ContainerStdio
from pycontainerd.cri.images import chain_id
from pycontainerd.cri.sandbox import K8S_NAMESPACE, KIND_LABEL, READY, SPEC_TYPE_URL
from pycontainerd.cri.spec import cgroups_path, default_mounts
from pycontainerd.cri.stats import oom_killed

if TYPE_CHECKING:
    from collections.abc import Callable

    from pycontainerd.core.types import Mount
    from pycontainerd.cri.catalog import ImageCatalog
    from pycontainerd.cri.sandbox import PodSandbox, SandboxManager

log = logging.getLogger(__name__)

CREATED = "CONTAINER_CREATED"
RUNNING = "CONTAINER_RUNNING"
EXITED = "CONTAINER_EXITED"
CAP_SETS = ("bounding", "effective", "permitted")
PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024
RESOURCES_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
METADATA_EXTENSION = "io.cri-containerd.container.metadata"
METADATA_TYPE_URL = "pycontainerd.cri.v1.Container"


@functools.cache
def apparmor_enabled() -> bool:
    """Whether this host confines containers with AppArmor (checked once per daemon)."""
    return apparmor.host_supports()


@dataclass(frozen=True, slots=True)
class _Creation:
    """One CreateContainer being served: what its steps share."""

    cid: str
    name: str
    sb: PodSandbox
    config: dict[str, Any]
    meta: dict[str, Any]
    image_ref: str
    image_id: str


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

    def to_json(self) -> bytes:
        """The persisted form (without the spec, which the record holds, and the pid)."""
        data = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in {"exited", "spec", "pid"}
        }
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, spec: bytes) -> CriContainer:
        """Read the persisted form back.

        Raises:
            ValueError: not a persisted container.
        """
        data = json.loads(raw)
        if not isinstance(data, dict):
            msg = "container metadata is not a JSON object"
            raise ValueError(msg)
        names = {f.name for f in dataclasses.fields(cls)} - {"exited", "spec", "pid"}
        return cls(**{k: v for k, v in data.items() if k in names}, spec=spec)

    def extension(self) -> AnyValue:
        return AnyValue(type_url=METADATA_TYPE_URL, value=self.to_json())


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


def _log_file(log_dir: str, log_path: str) -> str:
    """The container's log file: ``log_path`` under the pod's ``log_directory``.

    A relative path without a directory means no log (never the daemon's cwd).
    """
    if log_dir and log_path:
        return os.path.join(log_dir, log_path)
    return log_path if os.path.isabs(log_path) else ""


def oci_resources(res: dict[str, Any]) -> dict[str, Any]:
    """OCI ``LinuxResources`` from CRI ``LinuxContainerResources`` (as a dict); unset = absent."""
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    for src, dst in (("cpu_shares", "shares"), ("cpu_quota", "quota"), ("cpu_period", "period")):
        if int(res.get(src, 0) or 0):
            cpu[dst] = int(res[src])
    if res.get("cpuset_cpus"):
        cpu["cpus"] = str(res["cpuset_cpus"])
    if res.get("cpuset_mems"):
        cpu["mems"] = str(res["cpuset_mems"])
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = {}
    if int(res.get("memory_limit_in_bytes", 0) or 0):
        memory["limit"] = int(res["memory_limit_in_bytes"])
    if int(res.get("memory_swap_limit_in_bytes", 0) or 0):
        memory["swap"] = int(res["memory_swap_limit_in_bytes"])
    if memory:
        out["memory"] = memory
    pages = [
        {"pageSize": str(h.get("page_size", "")), "limit": int(h.get("limit", 0))}
        for h in res.get("hugepage_limits") or []
    ]
    if pages:
        out["hugepageLimits"] = pages
    if res.get("unified"):
        out["unified"] = {str(k): str(v) for k, v in res["unified"].items()}
    return out


def oom_score_adj(wanted: int, *, restrict: bool, own: int | None = None) -> int:
    """The container's ``oom_score_adj``, within [-1000, 1000].

    With ``restrict_oom_score_adj`` it is never below the daemon's own, which
    a daemon without CAP_SYS_RESOURCE could not lower.
    """
    value = max(-1000, min(1000, wanted))
    if restrict:
        if own is None:
            try:
                own = int(Path("/proc/self/oom_score_adj").read_text())
            except (OSError, ValueError):
                own = 0
        value = max(value, own)
    return value


PROPAGATION = {0: "rprivate", 1: "rslave", 2: "rshared"}
"""CRI ``MountPropagation`` -> the bind mount's propagation option."""


def cri_mount(m: dict[str, Any]) -> dict[str, Any]:
    """The OCI bind mount for a CRI ``Mount``: propagation and read-only as options.

    The host path's symlinks are resolved (as containerd does), so a volume
    whose host path is a symlink mounts its target.
    """
    host = str(m.get("host_path", ""))
    with contextlib.suppress(OSError):
        host = os.path.realpath(host, strict=True)
    return {
        "destination": str(m.get("container_path", "")),
        "type": "bind",
        "source": host,
        "options": [
            "rbind",
            PROPAGATION.get(int(m.get("propagation", 0) or 0), "rprivate"),
            "ro" if m.get("readonly") else "rw",
        ],
    }


def sandbox_shm(sandboxes_dir: Path, sb: PodSandbox) -> str | None:
    """The ``/dev/shm`` a pod's containers share: the host's (IPC NODE) or the pod's tmpfs."""
    if sb.namespace_options.get("ipc") == 2:  # NODE
        return "/dev/shm"  # noqa: S108
    shm = sandboxes_dir / sb.id / "shm"
    return str(shm) if os.path.ismount(shm) else None


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


def _with_terminal(spec: bytes, *, tty: bool) -> bytes:
    """The spec with ``process.terminal`` as the CRI config's ``tty`` asks (attach)."""
    if not tty:
        return spec
    data = json.loads(spec)
    if data.get("process", {}).get("terminal"):
        return spec
    data.setdefault("process", {})["terminal"] = True
    return json.dumps(data).encode()


class ContainerManager:
    """The containers of every sandbox; their state in memory."""

    def __init__(self, sandboxes: SandboxManager, catalog: ImageCatalog) -> None:
        self.sandboxes = sandboxes
        self.catalog = catalog
        self.containers: dict[str, CriContainer] = {}
        self.names: dict[str, str] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self.io_dir = sandboxes.state / "io"
        self.logs: dict[str, cio.LogFile] = {}
        self.on_exit: Callable[[CriContainer], None] | None = None
        self.stdio: dict[str, ContainerStdio] = {}
        """Each running container's stdio for CRI Attach."""
        """Called when a container's exit is seen (the service sends the event)."""

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
            c = await self._create(
                _Creation(cid, name, sb, config, meta, image_ref, img.id), img.config
            )
        except BaseException:
            self.names.pop(name, None)
            raise
        self.containers[cid] = c
        return c

    async def _create(self, req: _Creation, image_config: dict[str, object]) -> CriContainer:
        sb, config = req.sb, req.config
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
        privileged = bool(sec.get("privileged", False))
        sb_linux = sb.config.get("linux") or {}
        if privileged and not (sb_linux.get("security_context") or {}).get("privileged"):
            msg = "no privileged container allowed in sandbox"
            raise InvalidArgumentError(msg)
        enabled = not self.sandboxes.config.disable_apparmor and apparmor_enabled()
        decide = functools.partial(
            apparmor.profile_for, sec, privileged=privileged, enabled=enabled
        )
        # only a host with AppArmor reads securityfs or runs apparmor_parser: off the loop
        profile = await asyncio.to_thread(decide) if enabled else decide()
        async with self.sandboxes.lease():
            return await self._create_leased(req, diff_ids, icfg, args, profile)

    async def _create_leased(
        self,
        req: _Creation,
        diff_ids: list[str],
        icfg: dict[str, Any],
        args: list[str],
        apparmor_profile: str | None,
    ) -> CriContainer:
        cid, sb, config, meta, image_ref = req.cid, req.sb, req.config, req.meta, req.image_ref
        md = self.sandboxes.md
        snapshotter = self.sandboxes.config.snapshotter
        with with_namespace(K8S_NAMESPACE):
            snap = md.snapshotter(snapshotter)
            rootfs_mounts = await snap.prepare(cid, chain_id(diff_ids))
        try:
            spec = self._spec(req, icfg, rootfs_mounts, args)
            if apparmor_profile is not None:
                spec["process"]["apparmorProfile"] = apparmor_profile
        except BaseException:
            with with_namespace(K8S_NAMESPACE), contextlib.suppress(Exception):
                await snap.remove(cid)
            raise
        spec_bytes = json.dumps(spec).encode()
        log_dir = str(sb.config.get("log_directory") or "")
        log_path = str(config.get("log_path") or "")
        c = CriContainer(
            id=cid,
            sandbox_id=sb.id,
            name=req.name,
            metadata={"name": str(meta.get("name", "")), "attempt": int(meta.get("attempt", 0))},
            image=image_ref,
            image_id=req.image_id,
            labels=dict(config.get("labels") or {}),
            annotations=dict(config.get("annotations") or {}),
            created_at=time.time_ns(),
            spec=spec_bytes,
            log_path=_log_file(log_dir, log_path),
            config=config,
        )
        runtime = self.sandboxes.config.runtime_for(sb.runtime_handler)
        with with_namespace(K8S_NAMESPACE):
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
                        extensions={METADATA_EXTENSION: c.extension()},
                    )
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await snap.remove(cid)
                raise
        return c

    def _spec(  # noqa: PLR0912, PLR0915
        self, req: _Creation, icfg: dict[str, Any], rootfs_mounts: list[Mount], args: list[str]
    ) -> dict[str, Any]:
        """The container's OCI spec from its CRI config, its image and its pod."""
        cid, sb, config, meta, image_ref = req.cid, req.sb, req.config, req.meta, req.image_ref
        linux = config.get("linux") or {}
        sec = linux.get("security_context") or {}
        privileged = bool(sec.get("privileged", False))
        readonly_rootfs = bool(sec.get("readonly_rootfs", False))
        passwd_text = security.read_rootfs_file(rootfs_mounts, "/etc/passwd")
        group_text = security.read_rootfs_file(rootfs_mounts, "/etc/group")
        user = security.resolve_user(
            security.user_string(sec, str(icfg.get("User") or "")),
            security.parse_passwd(passwd_text) if passwd_text is not None else None,
            security.parse_group(group_text) if group_text is not None else None,
            [int(g) for g in sec.get("supplemental_groups") or []],
        )
        namespaces = _namespaces(sb, sec.get("namespace_options") or {})
        files = self.sandboxes.sandboxes_dir / sb.id
        mounts = default_mounts()
        if privileged:
            for m in mounts:
                if m["destination"] == "/sys":
                    m["options"] = [o for o in m["options"] if o != "ro"]
        shm = sandbox_shm(self.sandboxes.sandboxes_dir, sb)
        if shm is not None:
            mounts = [m for m in mounts if m["destination"] != "/dev/shm"]  # noqa: S108
            mounts.append(
                {
                    "destination": "/dev/shm",  # noqa: S108
                    "type": "bind",
                    "source": shm,
                    "options": ["rbind", "rprivate", "rw", "nosuid", "nodev", "noexec"],
                }
            )
        for fname in ("hostname", "hosts", "resolv.conf"):
            mounts.append(
                {
                    "destination": f"/etc/{fname}",
                    "type": "bind",
                    "source": str(files / fname),
                    "options": ["rbind", "rprivate", "ro" if readonly_rootfs else "rw"],
                }
            )
        propagation = ""
        for m in config.get("mounts") or []:
            mount = cri_mount(m)
            mounts.append(mount)
            if "rshared" in mount["options"]:
                propagation = "rshared"
            elif "rslave" in mount["options"] and not propagation:
                propagation = "rslave"
        devices: list[dict[str, Any]] = []
        rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
        if privileged:
            devices = security.host_devices()
            rules = [{"allow": True, "access": "rwm"}]
        for d in config.get("devices") or []:
            dev, rule = security.device(
                str(d.get("host_path", "")),
                str(d.get("container_path", "")),
                str(d.get("permissions", "")),
            )
            devices = [x for x in devices if x["path"] != dev["path"]] + [dev]
            rules.append(rule)
        caps = security.capabilities(sec, DEFAULT_CAPABILITIES, privileged=privileged)
        seccomp = security.seccomp_profile(sec, caps, privileged=privileged)
        masked = [str(p) for p in sec.get("masked_paths") or []] or list(MASKED_PATHS)
        readonly = [str(p) for p in sec.get("readonly_paths") or []] or list(READONLY_PATHS)
        sb_linux = sb.config.get("linux") or {}
        runtime = self.sandboxes.config.runtime_for(sb.runtime_handler)
        hostname_file = files / "hostname"
        hostname = hostname_file.read_text().strip() if hostname_file.is_file() else ""
        process_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
        if user.additional_gids:
            process_user["additionalGids"] = list(user.additional_gids)
        env = merge_env(list(icfg.get("Env") or []), list(config.get("envs") or []))
        if config.get("tty") and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")
        spec: dict[str, Any] = {
            "ociVersion": "1.1.0",
            "process": {
                "terminal": bool(config.get("tty", False)),
                "user": process_user,
                "args": args,
                "env": env,
                "cwd": str(config.get("working_dir") or icfg.get("WorkingDir") or "/"),
                "capabilities": {k: list(caps) for k in CAP_SETS},
                "noNewPrivileges": bool(sec.get("no_new_privs", False)),
                "oomScoreAdj": oom_score_adj(
                    int((linux.get("resources") or {}).get("oom_score_adj", 0) or 0),
                    restrict=self.sandboxes.config.restrict_oom_score_adj,
                ),
            },
            "root": {"path": "rootfs", "readonly": readonly_rootfs},
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
                "resources": {
                    "devices": rules,
                    **oci_resources(linux.get("resources") or {}),
                },
                "maskedPaths": [] if privileged else masked,
                "readonlyPaths": [] if privileged else readonly,
            },
        }
        if propagation:
            spec["linux"]["rootfsPropagation"] = propagation
        if devices:
            spec["linux"]["devices"] = devices
        if seccomp is not None:
            spec["linux"]["seccomp"] = seccomp
        return spec

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
        stdio = self.stdio[c.id] = ContainerStdio.for_config(c.config)
        stdin = stdio.open_stdin(self.io_dir / c.id / "stdin") if c.config.get("stdin") else ""
        fifos, readers = self._log_fifos(c)
        try:
            try:
                t = await tasks.create(
                    K8S_NAMESPACE,
                    c.id,
                    spec=_with_terminal(c.spec, tty=stdio.tty),
                    runtime=runtime.runtime_type,
                    rootfs=[mount_to_proto(m) for m in mounts],
                    stdin=stdin,
                    stdout=str(fifos.get("stdout", "")),
                    stderr=str(fifos.get("stderr", "")),
                    terminal=bool(c.config.get("tty", False)),
                )
            except BaseException:
                stdio.close_stdin()
                raise
            started = time.time_ns()
            try:
                await t.call("Start", shim.StartRequest(id=c.id))
            except BaseException:
                with contextlib.suppress(Exception):
                    await tasks.delete(K8S_NAMESPACE, c.id)
                raise
        finally:
            # The shim has its ends open now (or never will): end of file
            # comes when it closes them.
            for reader in readers:
                reader.release()
        c.pid = t.pid
        c.started_at = started
        c.state = RUNNING
        await self._persist(c)
        watcher = asyncio.get_running_loop().create_task(self._watch(c))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    def _log_fifos(self, c: CriContainer) -> tuple[dict[str, Path], list[cio.OutputFifo]]:
        """FIFOs for the container's output and the tasks copying it into its CRI log.

        Our read ends are open before the shim opens its ends; they hold a
        write end each until :meth:`cio.OutputFifo.release`.
        """
        streams = ("stdout",) if c.config.get("tty") else ("stdout", "stderr")
        fifos = {s: cio.make_fifo(self.io_dir / c.id / s) for s in streams}
        return fifos, self._copy_logs(c, hold=True)

    def _copy_logs(self, c: CriContainer, *, hold: bool) -> list[cio.OutputFifo]:
        """Start copying the output FIFOs into the CRI log (again, after a restart)."""
        max_size = self.sandboxes.config.max_container_log_line_size
        loop = asyncio.get_running_loop()
        readers: list[cio.OutputFifo] = []
        try:
            paths = [self.io_dir / c.id / s for s in ("stdout", "stderr")]
            # (extend keeps the ones opened before a failure, to be closed)
            readers.extend(cio.OutputFifo(p, hold=hold) for p in paths if p.exists())
        except BaseException:
            for reader in readers:
                reader.close()
            raise
        out = self.logs[c.id] = cio.open_log(c.log_path or os.devnull)
        stdio = self.stdio.setdefault(c.id, ContainerStdio.for_config(c.config))
        copiers = [
            loop.create_task(
                cio.copy_to_log(reader, reader.path.name, out, max_size, stdio.publish)
            )
            for reader in readers
        ]
        for copier in copiers:
            self._watchers.add(copier)
            copier.add_done_callback(self._watchers.discard)

        async def close_when_done() -> None:
            await asyncio.gather(*copiers, return_exceptions=True)
            for reader in readers:
                reader.close()
            stdio.end_output()
            out.close()
            if self.logs.get(c.id) is out:
                del self.logs[c.id]

        closer = loop.create_task(close_when_done())
        self._watchers.add(closer)
        closer.add_done_callback(self._watchers.discard)
        return readers

    def reopen_log(self, id_or_prefix: str) -> None:
        """ReopenContainerLog: open the log file again (after the kubelet rotated it).

        Raises:
            NotFoundError: no such container.
            FailedPreconditionError: it is not running, or the file cannot be opened.
        """
        c = self.get(id_or_prefix)
        out = self.logs.get(c.id)
        if c.state != RUNNING or out is None:
            msg = f"container {go_quote(c.id)} is not running"
            raise FailedPreconditionError(msg)
        try:
            out.reopen()
        except OSError as exc:
            msg = f"failed to reopen container log {go_quote(c.log_path)}: {exc.strerror}"
            raise FailedPreconditionError(msg) from exc

    async def exec_sync(
        self,
        id_or_prefix: str,
        cmd: list[str],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[bytes, bytes, int]:
        """Run ``cmd`` in the running container; its output and exit code.

        Raises:
            NotFoundError: no such container.
            FailedPreconditionError: it is not running.
            DeadlineExceededError: ``timeout`` (seconds, 0 = none) passed; the process is killed.
        """
        from google.protobuf import any_pb2

        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        c = self.get(id_or_prefix)
        if c.state != RUNNING:
            msg = f"container {go_quote(c.id)} is not running"
            raise FailedPreconditionError(msg)
        t = self.sandboxes.tasks.get(K8S_NAMESPACE, c.id)
        exec_id = secrets.token_hex(8)
        process = dict(json.loads(c.spec)["process"])
        process["args"] = list(cmd)
        process["terminal"] = False
        out_path = cio.make_fifo(self.io_dir / c.id / f"{exec_id}-stdout")
        err_path = cio.make_fifo(self.io_dir / c.id / f"{exec_id}-stderr")
        # Our read ends are open before the shim opens its ends (see cio).
        readers = [cio.OutputFifo(out_path)]
        try:
            readers.append(cio.OutputFifo(err_path))
        except BaseException:
            readers[0].close()
            raise
        out = asyncio.ensure_future(cio.collect(readers[0], EXEC_OUTPUT_LIMIT))
        err = asyncio.ensure_future(cio.collect(readers[1], EXEC_OUTPUT_LIMIT))
        try:
            await t.call(
                "Exec",
                shim.ExecProcessRequest(
                    id=c.id,
                    exec_id=exec_id,
                    stdout=str(out_path),
                    stderr=str(err_path),
                    spec=any_pb2.Any(type_url=PROCESS_TYPE_URL, value=json.dumps(process).encode()),
                ),
            )
            await t.call("Start", shim.StartRequest(id=c.id, exec_id=exec_id))
            for reader in readers:
                reader.release()
            try:
                resp = await asyncio.wait_for(t.wait(exec_id), timeout or None)
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await t.call(
                        "Kill",
                        shim.KillRequest(id=c.id, exec_id=exec_id, signal=int(signal.SIGKILL)),
                    )
                    await t.wait(exec_id)
                msg = f"timeout {timeout:g}s exceeded running {cmd!r} in {go_quote(c.id)}"
                raise DeadlineExceededError(msg) from None
            stdout, stderr = await asyncio.gather(out, err)
            return stdout, stderr, int(resp.exit_status)
        finally:
            for fut in (out, err):
                if not fut.done():
                    fut.cancel()
            await asyncio.gather(out, err, return_exceptions=True)
            for reader in readers:
                reader.close()
            with contextlib.suppress(Exception):
                await t.call("Delete", shim.DeleteRequest(id=c.id, exec_id=exec_id))
            for path in (out_path, err_path):
                with contextlib.suppress(OSError):
                    path.unlink()

    async def _watch(self, c: CriContainer) -> None:
        tasks = self.sandboxes.tasks
        try:
            resp = await tasks.get(K8S_NAMESPACE, c.id).wait()
        except Exception:
            # Not an exit (a dead shim answers with its exit): the daemon is
            # going away or lost the task. Nothing is recorded, so a restarted
            # daemon finds the container as it was.
            log.warning("container %s: lost track of its task", c.id, exc_info=True)
            c.exited.set()
            return
        c.exit_code = int(resp.exit_status)
        ts = resp.exited_at
        c.finished_at = ts.seconds * 1_000_000_000 + ts.nanos if ts.seconds else time.time_ns()
        c.reason = "Completed" if c.exit_code == 0 else "Error"
        with contextlib.suppress(ValueError, KeyError, TypeError):
            cgroup = str(json.loads(c.spec)["linux"]["cgroupsPath"])
            if ":" not in cgroup and await asyncio.to_thread(oom_killed, cgroup):
                c.reason = "OOMKilled"
        c.state = EXITED
        c.exited.set()
        if c.id in self.stdio:
            self.stdio[c.id].close_stdin()
        if self.on_exit is not None:
            self.on_exit(c)
        try:
            await self._persist(c)
        except Exception:
            log.exception("container %s: recording its exit", c.id)

    async def _persist(self, c: CriContainer) -> None:
        with with_namespace(K8S_NAMESPACE):
            store = self.sandboxes.md.container_store()
            try:
                current = await store.get(c.id)
            except NotFoundError:
                return
            extensions = {**current.extensions, METADATA_EXTENSION: c.extension()}
            await store.update(dataclasses.replace(current, extensions=extensions), "extensions")

    async def restore(self) -> None:
        """Rebuild the containers from their records after a daemon restart.

        A container whose task still runs is RUNNING again (its exit watched,
        its log FIFOs read again); one whose task is gone is EXITED (exit code
        and reason as last recorded, or ``Unknown`` with 255 when it was
        running when the daemon went away).
        """
        with with_namespace(K8S_NAMESPACE):
            records = await self.sandboxes.md.container_store().list()
        tasks = self.sandboxes.tasks
        for record in records:
            ext = record.extensions.get(METADATA_EXTENSION)
            if record.labels.get(KIND_LABEL) != "container" or ext is None:
                continue
            try:
                c = CriContainer.from_json(ext.value, record.spec.value if record.spec else b"")
            except (ValueError, TypeError):
                log.warning("container %s: no readable CRI metadata, not restored", record.id)
                continue
            self.containers[c.id] = c
            self.names[c.name] = c.id
            if c.state != RUNNING:
                c.exited.set()
                continue
            if tasks.exists(K8S_NAMESPACE, c.id):
                t = tasks.get(K8S_NAMESPACE, c.id)
                c.pid = t.pid
                if c.log_path or (self.io_dir / c.id / "stdout").exists():
                    self._copy_logs(c, hold=False)
                watcher = asyncio.get_running_loop().create_task(self._watch(c))
                self._watchers.add(watcher)
                watcher.add_done_callback(self._watchers.discard)
            else:
                c.state, c.exit_code, c.reason = EXITED, 255, "Unknown"
                c.finished_at = c.finished_at or time.time_ns()
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
        stdio = self.stdio.pop(c.id, None)
        if stdio is not None:
            stdio.close()
        await asyncio.to_thread(shutil.rmtree, self.io_dir / c.id, True)
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

    async def update_resources(self, id_or_prefix: str, resources: dict[str, Any]) -> None:
        """UpdateContainerResources: ``runc update`` through the shim when running.

        The container's spec is updated too (so a later start uses them); the
        record is not.

        Raises:
            NotFoundError: no such container.
        """
        from google.protobuf import any_pb2

        from pycontainerd.api.runtime.task.v2 import shim_pb2 as shim

        c = self.get(id_or_prefix)
        oci = oci_resources(resources)
        if c.state == RUNNING:
            t = self.sandboxes.tasks.get(K8S_NAMESPACE, c.id)
            await t.call(
                "Update",
                shim.UpdateTaskRequest(
                    id=c.id,
                    resources=any_pb2.Any(
                        type_url=RESOURCES_TYPE_URL, value=json.dumps(oci).encode()
                    ),
                ),
            )
        spec = json.loads(c.spec)
        spec.setdefault("linux", {}).setdefault("resources", {}).update(oci)
        c.spec = json.dumps(spec).encode()

    async def stop_in(self, sandbox_id: str) -> None:
        for c in self.select(sandbox_id=sandbox_id):
            await self.stop(c.id, 0)

    async def remove_in(self, sandbox_id: str) -> None:
        for c in self.select(sandbox_id=sandbox_id):
            await self.remove(c.id)
