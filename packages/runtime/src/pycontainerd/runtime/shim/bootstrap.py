"""The ``start`` and ``delete`` subcommands, run once per task by the daemon.

``start`` (cwd = bundle) finds the shim that serves the task's group, or starts
one, and prints its address. Tasks are grouped like upstream's runc shim groups
a pod: by the annotation ``io.containerd.runc.v2.group`` or
``io.kubernetes.cri.sandbox-id`` in the bundle's ``config.json``; without one,
by the policy in ``PYCONTAINERD_SHIM_GROUPING``: ``namespace`` (the default:
one shim per daemon and namespace, see the package README for the numbers) or
``container`` (one shim per task, as upstream).

runc's ``ShimCgroup`` option (in the runtime options ``start`` reads on stdin)
puts the shim serving the task into that cgroup, as upstream's runc shim does.
A shim of the namespace serves tasks from one cgroup only, so without a group
annotation, a task with a ``ShimCgroup`` gets the shim of the namespace *and*
that cgroup (a shim of its own unless other tasks asked for the same cgroup).
With a group annotation the group's first task decides, as upstream (the
cgroup is joined when the shim starts).

Reusing a shim must not race with that shim exiting because its last task just
went away. Both sides take an exclusive ``flock`` on ``<socket>.lock``: ``start``
holds it while it reserves the new task id in the running shim (a tiny ttrpc
call, ``pycontainerd.shim.v1.Bootstrap/Reserve``) or while it binds a new
socket and spawns a new shim; a shim decides to exit, stops listening and
removes its socket only while holding it. A reservation keeps the shim alive
until the task is created (or it expires).

``delete`` cleans up after a shim that is gone: ``runc delete --force``,
unmount the rootfs, and print a ``DeleteResponse`` (exit status 137, as
upstream) on stdout.

Neither path imports asyncio or protobuf.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import sys
import time

from pycontainerd.runtime.shim import paths, wire

# typing pulls in re: this module is on the start path, so no typing import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from collections.abc import Callable

    from pycontainerd.runtime.shim.flags import Flags

    Handoff = Callable[[list[str], dict[str, str], int, str], int | None]
    """Gives a new shim's work to a spare shim: (flags, environment, listening
    socket fd, log path) -> the spare's pid, or None (start a server as usual)."""

__all__ = [
    "BOOTSTRAP_SERVICE",
    "GROUP_ANNOTATIONS",
    "delete",
    "group_of",
    "join",
    "libc",
    "reuse",
    "start",
]

BOOTSTRAP_SERVICE = "pycontainerd.shim.v1.Bootstrap"
"""The shim's own ttrpc service; ``Reserve`` takes a task id as raw bytes."""

GROUP_ANNOTATIONS = ("io.containerd.runc.v2.group", "io.kubernetes.cri.sandbox-id")
GROUPING_ENV = "PYCONTAINERD_SHIM_GROUPING"
LISTEN_FD_ENV = "PYCONTAINERD_SHIM_LISTEN_FD"
"""Set by ``start`` for the server: the inherited fd of its bound, listening socket."""
STATE_ENV = "PYCONTAINERD_SHIM_STATE"
OPTIONS_FILE = "options.json"
SIGKILL_STATUS = 128 + 9
_CONNECT_TIMEOUT = 5.0


def _fail(message: str) -> int:
    sys.stderr.write(f"containerd-shim-pyrunc-v2: {message}\n")
    return 1


def group_of(bundle: str, task_id: str, policy: str | None = None, shim_cgroup: str = "") -> str:
    """The group a task's shim is chosen by (empty: the whole namespace)."""
    try:
        with open(os.path.join(bundle, "config.json"), "rb") as f:
            raw = f.read()
    except OSError:
        raw = b""
    spec: object = {}
    # Parse (json pulls in re) only when a group annotation can be there at all.
    if any(key.encode() in raw for key in GROUP_ANNOTATIONS):
        import json

        with contextlib.suppress(ValueError):
            spec = json.loads(raw)
    annotations = spec.get("annotations") if isinstance(spec, dict) else None
    if isinstance(annotations, dict):
        for key in GROUP_ANNOTATIONS:
            value = annotations.get(key)
            if isinstance(value, str) and value:
                return value
    policy = policy or os.environ.get(GROUPING_ENV, "namespace")
    if policy == "container":
        return task_id
    return f"shim-cgroup:{shim_cgroup}" if shim_cgroup else ""


def _reserve(path: str, task_id: str) -> int | None:
    """Reserve ``task_id`` in the shim listening on ``path``; its pid, or None if none answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_CONNECT_TIMEOUT)
    try:
        sock.connect(path)
        sock.sendall(wire.ttrpc_request(1, BOOTSTRAP_SERVICE, "Reserve", task_id.encode()))
        body = wire.read_response(sock, 1)
    except OSError:
        return None
    finally:
        sock.close()
    if not wire.response_ok(body):
        return None
    try:
        return int(wire.response_payload(body) or b"0")
    except ValueError:
        return 0


def _adjust_oom_score(pid: int, daemon: int) -> None:
    """Give ``pid`` the daemon's ``oom_score_adj`` + 1, at most 1000."""
    try:
        with open(f"/proc/{daemon}/oom_score_adj") as f:
            score = int(f.read().strip())
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(min(score + 1, 1000)))
    except (OSError, ValueError):
        pass  # unprivileged or in a user namespace: upstream ignores this too


# Start "$@" in the background and print its pid: the shim's parent exits at
# once, so the shim is nobody's child. Its output is appended to $1, or (no
# log) its stdout discarded and its stderr the caller's.
_DETACH_TO_LOG = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
_DETACH = '"$@" </dev/null >/dev/null & echo $!'


def spawn_detached(argv: list[str], env: dict[str, str], fd: int, log: str | None = None) -> int:
    """Start ``argv`` through ``/bin/sh`` (so it is not our child), passing it ``fd``; its pid.

    It runs in a new session, in ``/``, with our ``oom_score_adj`` + 1 and its
    output appended to ``log`` (without one: stdout discarded, stderr ours).

    Raises:
        OSError: no pid came back.
    """
    import subprocess

    script = ["-c", _DETACH_TO_LOG, "sh", log] if log is not None else ["-c", _DETACH, "sh"]
    try:
        out = subprocess.run(
            ["/bin/sh", *script, *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=None if log is None else subprocess.PIPE,
            cwd="/",
            env=env,
            start_new_session=True,
            pass_fds=(fd,),
            check=False,
            timeout=_CONNECT_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        msg = "no shim pid from /bin/sh in time"
        raise OSError(msg) from exc
    try:
        pid = int(out.stdout.strip())
    except ValueError:
        why = (out.stderr or b"").decode(errors="replace").strip()
        msg = f"no shim pid from /bin/sh: {why or f'exit status {out.returncode}'}"
        raise OSError(msg) from None
    _adjust_oom_score(pid, os.getpid())
    return pid


def _spawn(
    flags: Flags,
    path: str,
    state: str,
    *,
    env: dict[str, str] | None = None,
    detach: bool = False,
    spare: Handoff | None = None,
) -> int:
    """Bind ``path`` and start a shim server on it; returns the server's pid.

    ``detach`` (the daemon starting a shim in its own process) starts the
    server through ``/bin/sh`` so that the daemon does not become its parent.
    ``spare`` hands the server's work to a spare shim (:mod:`.spare`)
    instead; when there is none, or it fails, a server is started as usual.
    """
    import subprocess

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(128)
        log_path = path + ".log"
        argv = [
            sys.executable,
            "-m",
            "pycontainerd.runtime.shim",
            "-namespace",
            flags.namespace,
            "-id",
            flags.id,
            "-address",
            flags.address,
            "-socket",
            path,
        ]
        if flags.debug:
            argv.append("-debug")
        env = dict(os.environ if env is None else env)
        env[STATE_ENV] = state
        pid = None if spare is None else spare(argv[3:], env, listener.fileno(), log_path)
        if pid is not None:
            return pid
        env[LISTEN_FD_ENV] = str(listener.fileno())
        if detach:
            return spawn_detached(argv, env, listener.fileno(), log_path)
        with open(log_path, "ab") as log, open(os.devnull, "rb") as null:
            proc = subprocess.Popen(
                argv,
                stdin=null,
                stdout=log,
                stderr=log,
                cwd="/",
                env=env,
                start_new_session=True,
                pass_fds=(listener.fileno(),),
            )
        _adjust_oom_score(proc.pid, os.getppid())
        # Popen's bookkeeping must not reap the shim later: forget it.
        proc.returncode = 0
        return proc.pid
    finally:
        listener.close()


def _socket_of(
    bundle: str, namespace: str, task_id: str, address: str, policy: str | None, *, shim_cgroup: str
) -> str:
    """The socket path of the shim serving this task's group (ValueError: too long)."""
    state = paths.state_dir(bundle, address)
    group = group_of(bundle, task_id, policy, shim_cgroup)
    return paths.socket_path(state, address, namespace, group)


def _read_options() -> bytes:
    """The runtime options the daemon writes on stdin (nothing unless stdin is a pipe or file)."""
    import stat

    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return b""
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode)):
        return b""
    chunks = []
    while chunk := os.read(0, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def join_cgroup(path: str, pid: int, root: str = "/sys/fs/cgroup") -> None:
    """Move ``pid`` into the cgroup ``path`` (v2; on v1 every hierarchy that has it).

    Raises:
        OSError: with upstream's text, ``failed to load cgroup <path>: cgroups: cgroup
            deleted`` when no hierarchy has it, ``failed to join cgroup <path>:
            ...`` when the move fails.
    """
    rel = os.path.normpath("/" + path).lstrip("/")
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        dirs = [d for d in [os.path.join(root, rel)] if os.path.isdir(d)]
    else:
        try:
            hierarchies = sorted(os.listdir(root))
        except OSError:
            hierarchies = []
        dirs = [
            os.path.join(root, h, rel)
            for h in hierarchies
            if h != "unified" and os.path.isdir(os.path.join(root, h, rel))
        ]
    if not dirs:
        msg = f"failed to load cgroup {path}: cgroups: cgroup deleted"
        raise OSError(msg)
    for d in dirs:
        try:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError as exc:
            msg = f"failed to join cgroup {path}: {exc}"
            raise OSError(msg) from exc


def start(flags: Flags) -> int:
    """``start``: print the address of the shim serving this task, starting it if needed."""
    if not flags.id:
        return _fail("shim id cannot be empty")
    try:
        address = _start(os.getcwd(), flags, _read_options(), None)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    sys.stdout.write(address)
    sys.stdout.flush()
    return 0


def _start(
    bundle: str,
    flags: Flags,
    options: bytes,
    env: dict[str, str] | None,
    *,
    detach: bool = False,
    spare: Handoff | None = None,
) -> str:
    """Reserve the group's running shim or start one; its address.

    Raises:
        ValueError: the socket path is too long.
        OSError: the shim could not be started (the message says why).
    """
    state = paths.state_dir(bundle, flags.address)
    shim_cgroup = wire.shim_cgroup(options)
    policy = None if env is None else env.get(GROUPING_ENV) or "namespace"
    path = _socket_of(
        bundle, flags.namespace, flags.id, flags.address, policy, shim_cgroup=shim_cgroup
    )
    os.makedirs(paths.socket_dir(state), mode=0o711, exist_ok=True)
    lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        pid = _reserve(path, flags.id)
        if pid is None:
            try:
                pid = _spawn(flags, path, state, env=env, detach=detach, spare=spare)
            except OSError as exc:
                msg = f"cannot start shim: {exc}"
                raise OSError(msg) from exc
            if shim_cgroup:
                try:
                    join_cgroup(shim_cgroup, pid)
                except OSError:
                    _kill(pid)
                    raise
    finally:
        os.close(lock_fd)
    return _record(bundle, path, pid)


def start_here(
    bundle: str,
    namespace: str,
    task_id: str,
    address: str,
    env: dict[str, str],
    *,
    options: bytes = b"",
    debug: bool = False,
    spare: Handoff | None = None,
) -> str:
    """What ``start`` does, in the daemon's own process (no ``start`` process to pay for).

    A new shim server is started through ``/bin/sh``, which exits at once, so
    the daemon does not become the shim's parent; or ``spare`` hands the work
    to a spare shim started that way earlier.

    Args:
        bundle: the task's bundle directory.
        namespace: the task's namespace.
        task_id: the task id.
        address: the daemon's gRPC address (``-address``).
        env: the shim's environment (``PYCONTAINERD_SHIM_GROUPING`` in it chooses the policy).
        options: the runtime options ``start`` would read on stdin.
        debug: start the server with ``-debug``.
        spare: called (under the group's lock) only when a new shim is needed,
            with the server's flags, environment, listening socket and log
            path: the pid of the spare shim that took the work, or None.

    Returns:
        The shim's address (``unix://...``).

    Raises:
        ValueError: the socket path is too long.
        OSError: the shim could not be started.
    """
    from pycontainerd.runtime.shim.flags import Flags

    flags = Flags()
    flags.namespace, flags.id, flags.address, flags.debug = namespace, task_id, address, debug
    return _start(bundle, flags, options, env, detach=True, spare=spare)


def _kill(pid: int) -> None:
    import signal

    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def reuse(
    bundle: str,
    namespace: str,
    task_id: str,
    address: str,
    policy: str | None,
    *,
    options: bytes = b"",
) -> str | None:
    """What ``start`` does when the group's shim already runs, without a ``start`` process.

    The daemon calls this in-process for its own pyrunc shim: a running shim is
    reserved for ``task_id`` under the same lock ``start`` takes, and the
    bundle gets ``address`` and ``shim.pid``. Spawning a new shim is left to
    ``start`` (the daemon must not become the shim's parent).

    Args:
        bundle: the task's bundle directory.
        namespace: the task's namespace.
        task_id: the task id.
        address: the daemon's gRPC address (``-address``).
        policy: ``PYCONTAINERD_SHIM_GROUPING`` of the shim's environment.
        options: the runtime options ``start`` would read (a ``ShimCgroup`` in
            them chooses the group).

    Returns:
        The shim's address (``unix://...``), or None when no shim of the group answers.
    """
    try:
        path = _socket_of(
            bundle, namespace, task_id, address, policy, shim_cgroup=wire.shim_cgroup(options)
        )
    except ValueError:
        return None
    if not os.path.exists(path):
        return None
    try:
        lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        pid = _reserve(path, task_id)
    finally:
        os.close(lock_fd)
    if pid is None:
        return None
    return _record(bundle, path, pid)


def join(bundle: str, path: str, task_id: str) -> str | None:
    """Reserve ``task_id`` in the shim on socket ``path`` (a sandbox's), as :func:`reuse`.

    Returns:
        The shim's address, or None when it does not answer.
    """
    try:
        lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        pid = _reserve(path, task_id)
    finally:
        os.close(lock_fd)
    return None if pid is None else _record(bundle, path, pid)


def _record(bundle: str, path: str, pid: int) -> str:
    """Write ``address`` and ``shim.pid`` into the bundle; return the address."""
    address = "unix://" + path
    _write_file(os.path.join(bundle, "address"), address)
    _write_file(os.path.join(bundle, "shim.pid"), str(pid))
    return address


def _write_file(path: str, data: str) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(data)
    os.replace(tmp, path)


def read_options(bundle: str) -> dict[str, object]:
    """The runc options this shim saved in the bundle at Create (empty if none)."""
    import json

    try:
        with open(os.path.join(bundle, OPTIONS_FILE), "rb") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def delete(flags: Flags) -> int:
    """``delete``: clean up after a dead shim and print a ``DeleteResponse``."""
    if not flags.id:
        return _fail("shim id cannot be empty")
    bundle = flags.bundle or os.getcwd()
    state = paths.state_dir(bundle, flags.address)
    options = read_options(bundle)
    root = options.get("root") or paths.runc_root(state, flags.namespace)
    binary = options.get("binary_name") or "runc"
    systemd = options.get("systemd_cgroup") is True
    pid = 0
    with contextlib.suppress(OSError, ValueError), open(os.path.join(bundle, "init.pid")) as f:
        pid = int(f.read().strip() or 0)
    # After a clean Delete runc has no state left for the task: skip the call.
    if os.path.exists(os.path.join(str(root), flags.id)):
        _runc_delete(str(binary), str(root), bundle, flags.id, systemd=systemd)
    _unmount(os.path.join(bundle, "rootfs"))
    sys.stdout.buffer.write(wire.delete_response(pid, SIGKILL_STATUS, time.time()))
    sys.stdout.flush()
    return 0


def _is_mountpoint(target: str) -> bool:
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            wanted = b" " + target.encode() + b" "
            return any(wanted in line for line in f)
    except OSError:
        return True


def _runc_delete(binary: str, root: str, bundle: str, task_id: str, *, systemd: bool) -> None:
    import subprocess

    argv = [binary, "--root", root]
    if os.path.isdir(bundle):
        argv += ["--log", os.path.join(bundle, "log.json"), "--log-format", "json"]
    if systemd:
        argv.append("--systemd-cgroup")
    argv += ["delete", "--force", task_id]
    try:
        res = subprocess.run(argv, capture_output=True, check=False, timeout=30)
        if res.returncode != 0 and b"does not exist" not in res.stderr:
            sys.stderr.write(f"runc delete {task_id}: {res.stderr.decode(errors='replace')}\n")
    except (OSError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"runc delete {task_id}: {exc}\n")


_LIBC: list[ctypes.CDLL] = []


def libc() -> ctypes.CDLL:
    """The C library, found once (``find_library`` runs ``ldconfig -p`` each time)."""
    if not _LIBC:
        import ctypes
        import ctypes.util

        _LIBC.append(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True))
    return _LIBC[0]


def _unmount(target: str) -> None:
    """Unmount everything mounted on ``target`` (lazily); not mounted is fine."""
    # Nothing mounted there (the usual case after a clean Delete): skip ctypes.
    if not _is_mountpoint(target):
        return
    import ctypes

    mnt_detach = 2
    for _ in range(32):
        if libc().umount2(target.encode(), mnt_detach) == 0:
            continue
        err = ctypes.get_errno()
        if err in {errno.EINVAL, errno.ENOENT}:
            return
        sys.stderr.write(f"unmount {target}: {os.strerror(err)}\n")
        return
