"""A container's security settings from the CRI security context.

Written for this project from the CRI and OCI runtime specs and from how
containerd's CRI behaves (facts, not code): the user and groups (names looked
up in the image's ``/etc/passwd`` and ``/etc/group``), capabilities with
``ALL``, privileged containers, seccomp profiles (``RuntimeDefault``,
``Unconfined``, ``Localhost`` in Docker's profile format) and devices.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from pycontainerd.core.types import Mount

CAPABILITY_NAMES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
"""Capability names by number (linux/capability.h)."""
CAP_SETS = ("bounding", "effective", "permitted")


def all_capabilities() -> list[str]:
    """Every capability the daemon itself has (its effective set), as containerd's CRI.

    A container cannot get more: on a machine without, say, CAP_SYS_RESOURCE
    a privileged container or ``add: [ALL]`` gets everything else.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                mask = int(line.split()[1], 16)
                return [n for i, n in enumerate(CAPABILITY_NAMES) if mask >> i & 1]
    except (OSError, ValueError, IndexError):
        pass
    return list(CAPABILITY_NAMES)


def _cap_name(name: str) -> str:
    upper = name.upper()
    return upper if upper.startswith("CAP_") else f"CAP_{upper}"


def capabilities(sec: dict[str, Any], default: Sequence[str], *, privileged: bool) -> list[str]:
    """The container's capability set from ``capabilities.add/drop`` (``ALL`` allowed).

    ``ALL`` in ``add`` starts from every capability, ``ALL`` in ``drop``
    from none; the named ones are then added and dropped, so ``add: [ALL],
    drop: [CHOWN]`` is everything but CAP_CHOWN (as containerd's CRI).
    A privileged container has every capability.
    """
    if privileged:
        return all_capabilities()
    caps = list(default)
    spec = sec.get("capabilities")
    if not isinstance(spec, dict):
        return caps
    add = [str(c) for c in spec.get("add_capabilities") or []]
    drop = [str(c) for c in spec.get("drop_capabilities") or []]
    if any(c.upper() == "ALL" for c in add):
        caps = all_capabilities()
    if any(c.upper() == "ALL" for c in drop):
        caps = []
    for c in add:
        name = _cap_name(c)
        if c.upper() != "ALL" and name not in caps:
            caps.append(name)
    dropped = {_cap_name(c) for c in drop if c.upper() != "ALL"}
    return [c for c in caps if c not in dropped]


# -- users and groups ------------------------------------------------------------------------


@dataclass(frozen=True)
class Passwd:
    """One ``/etc/passwd`` entry."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class Group:
    """One ``/etc/group`` entry."""

    name: str
    gid: int
    members: tuple[str, ...] = field(default=())


def parse_passwd(text: str) -> list[Passwd]:
    """The well-formed entries of an ``/etc/passwd`` file."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            out.append(Passwd(parts[0], int(parts[2]), int(parts[3])))
    return out


def parse_group(text: str) -> list[Group]:
    """The well-formed entries of an ``/etc/group`` file."""
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            members = tuple(m for m in (parts[3].split(",") if len(parts) > 3 else []) if m)
            out.append(Group(parts[0], int(parts[2]), members))
    return out


@dataclass(frozen=True)
class User:
    """The process's ``uid``, ``gid`` and additional groups."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()


def user_string(sec: dict[str, Any], image_user: str) -> str:
    """``user[:group]`` from the ``run_as_*`` fields, else the image's user.

    Raises:
        InvalidArgumentError: ``run_as_group`` without a user (containerd's text).
    """
    name = str(sec.get("run_as_username") or "")
    if not name and "run_as_user" in sec:
        name = str(int((sec["run_as_user"] or {}).get("value", 0)))
    if name and "run_as_group" in sec:
        return f"{name}:{int((sec['run_as_group'] or {}).get('value', 0))}"
    if not name and "run_as_group" in sec:
        msg = "user group is specified without user"
        raise InvalidArgumentError(msg)
    return name or image_user


def resolve_user(  # noqa: PLR0912
    userstr: str,
    passwd: list[Passwd] | None,
    groups: list[Group] | None,
    supplemental: Iterable[int] = (),
) -> User:
    """Resolve ``user[:group]`` against the image's files (None: the file is missing).

    A numeric user without a group takes the primary group of its passwd
    entry (0 when it has none); a name must exist. The additional groups are
    the groups listing the user as a member, then ``supplemental``.

    Raises:
        NotFoundError: a named user or group is not in the image.
        InvalidArgumentError: the user string is malformed.
    """
    user_part, _, group_part = userstr.partition(":")
    user_part = user_part or "0"
    entry: Passwd | None = None
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((p for p in passwd or [] if p.uid == uid), None)
        gid = entry.gid if entry else 0
    else:
        entry = next((p for p in passwd or [] if p.name == user_part), None)
        if entry is None:
            msg = f"no users found matching {user_part!r} in the image's /etc/passwd"
            raise NotFoundError(msg)
        uid, gid = entry.uid, entry.gid
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            grp = next((g for g in groups or [] if g.name == group_part), None)
            if grp is None:
                msg = f"no groups found matching {group_part!r} in the image's /etc/group"
                raise NotFoundError(msg)
            gid = grp.gid
    if userstr.count(":") > 1:
        msg = f"invalid user {userstr!r}"
        raise InvalidArgumentError(msg)
    extra: list[int] = []
    username = entry.name if entry else ("" if user_part.isdigit() else user_part)
    if username:
        for g in groups or []:
            if g.name != username and username in g.members and g.gid not in extra:
                extra.append(g.gid)
    for s in supplemental:
        if int(s) not in extra:
            extra.append(int(s))
    return User(uid, gid, tuple(extra))


def read_rootfs_file(mounts: Sequence[Mount], path: str) -> str | None:
    """A file of a prepared (not yet mounted) root filesystem, without mounting it.

    Looks through the layers of an overlay mount (upper first) or the source
    of a bind mount; None when the file is not there (or was whited out).
    """
    rel = PurePosixPath(path).relative_to("/")
    dirs: list[str] = []
    for m in mounts:
        if m.type == "overlay":
            opts = dict(o.split("=", 1) for o in m.options if "=" in o)
            if "upperdir" in opts:
                dirs.append(opts["upperdir"])
            dirs.extend(opts.get("lowerdir", "").split(":"))
        elif m.type == "bind" or "bind" in m.options or "rbind" in m.options:
            dirs.append(m.source)
    for d in dirs:
        if not d:
            continue
        candidate = Path(d) / rel
        try:
            st = candidate.lstat()
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return None  # a whiteout
        with contextlib.suppress(OSError, UnicodeDecodeError):
            return candidate.read_text()
        return None
    return None


# -- seccomp -------------------------------------------------------------------------------------

SECCOMP_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
}
_DOCKER_ARCH_MAP = {
    "SCMP_ARCH_X86_64": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "SCMP_ARCH_AARCH64": ["SCMP_ARCH_ARM"],
}
# The syscalls the default profile allows to everyone (Docker's and
# containerd's default profile: an allowlist, EPERM for anything else).
_DEFAULT_ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32
getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area
gettid gettimeofday getuid getuid32 getxattr inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
listen listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod
mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink
mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at
nanosleep newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal
pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64
preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev
pwritev2 read readahead readlink readlinkat readv recv recvfrom recvmmsg
recvmmsg_time64 recvmsg remap_file_pages removexattr rename renameat renameat2
restart_syscall rmdir rseq rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo
rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo
sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid
setpriority setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid
setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address
setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs
statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink
unlinkat utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
write writev arch_prctl modify_ldt chroot sethostname setdomainname
"""
# Allowed only with a capability (the default profile's "includes.caps").
_CAP_ALLOWED = {
    "CAP_SYS_ADMIN": (
        "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount"
        " mount_setattr move_mount open_tree perf_event_open quotactl quotactl_fd setns"
        " syslog umount umount2 unshare"
    ),
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
}
_CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET


def default_seccomp(caps: Iterable[str]) -> dict[str, Any]:
    """The RuntimeDefault profile (OCI form) for a process with ``caps``.

    An allowlist: everything else fails with EPERM. Without CAP_SYS_ADMIN,
    ``clone`` may not create namespaces and ``clone3`` answers ENOSYS (so
    that C libraries fall back to ``clone``), as in containerd's profile.
    """
    import platform

    have = set(caps)
    allowed = _DEFAULT_ALLOWED.split()
    for cap, names in _CAP_ALLOWED.items():
        if cap in have:
            allowed.extend(n for n in names.split() if n not in allowed)
    syscalls: list[dict[str, Any]] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    # personality: only the harmless personas
    syscalls.extend(
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}],
        }
        for persona in (0, 8, 131072, 131080, 4294967295)
    )
    if "CAP_SYS_ADMIN" not in have:
        syscalls.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 0,
                        "value": _CLONE_NAMESPACE_FLAGS,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            }
        )
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
    socket_rule: dict[str, Any] = {"names": ["socket"], "action": "SCMP_ACT_ALLOW"}
    if "CAP_AUDIT_WRITE" not in have:
        # AF_NETLINK + NETLINK_AUDIT needs CAP_AUDIT_WRITE; everything else is allowed
        syscalls.append(
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_NE"}],
            }
        )
        syscalls.append(
            {
                "names": ["socket"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {"index": 0, "value": 16, "op": "SCMP_CMP_EQ"},
                    {"index": 2, "value": 9, "op": "SCMP_CMP_NE"},
                ],
            }
        )
    else:
        syscalls.append(socket_rule)
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": SECCOMP_ARCHES.get(platform.machine(), []),
        "syscalls": syscalls,
    }


def docker_profile_to_oci(raw: bytes | str, caps: Iterable[str]) -> dict[str, Any]:  # noqa: PLR0912
    """A seccomp profile in Docker's JSON format (``Localhost`` profiles) as OCI ``seccomp``.

    ``archMap`` becomes the architecture list; rules whose ``includes`` or
    ``excludes`` (capabilities, architectures) do not match are left out.

    Raises:
        InvalidArgumentError: the profile is not valid JSON or has no default action.
    """
    import platform

    try:
        profile = json.loads(raw)
    except ValueError as exc:
        msg = f"decoding seccomp profile failed: {exc}"
        raise InvalidArgumentError(msg) from exc
    if not isinstance(profile, dict) or not profile.get("defaultAction"):
        msg = "seccomp profile has no defaultAction"
        raise InvalidArgumentError(msg)
    have = set(caps)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    arches: list[str] = []
    for entry in profile.get("archMap") or []:
        arches.append(entry.get("architecture", ""))
        arches.extend(entry.get("subArchitectures") or [])
    arches.extend(profile.get("architectures") or [])
    if arches:
        out["architectures"] = [a for a in arches if a]
    syscalls = []
    for rule in profile.get("syscalls") or []:
        inc, excl = rule.get("includes") or {}, rule.get("excludes") or {}
        if inc.get("caps") and not set(inc["caps"]) <= have:
            continue
        if inc.get("arches") and arch not in inc["arches"]:
            continue
        if excl.get("caps") and set(excl["caps"]) & have:
            continue
        if excl.get("arches") and arch in excl["arches"]:
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        item: dict[str, Any] = {"names": names, "action": rule.get("action", "")}
        if rule.get("args"):
            item["args"] = [{k: v for k, v in a.items() if v is not None} for a in rule["args"]]
        if rule.get("errnoRet") is not None:
            item["errnoRet"] = rule["errnoRet"]
        syscalls.append(item)
    if syscalls:
        out["syscalls"] = syscalls
    return out


def seccomp_profile(
    sec: dict[str, Any], caps: Iterable[str], *, privileged: bool
) -> dict[str, Any] | None:
    """The OCI seccomp section for the security context (None: unconfined).

    ``seccomp`` (type RuntimeDefault/Unconfined/Localhost) wins over the
    deprecated ``seccomp_profile_path`` (``runtime/default``,
    ``docker/default``, ``unconfined``, ``localhost/<path>``). No profile at
    all is unconfined, as containerd's default. Privileged containers are
    never confined.

    Raises:
        InvalidArgumentError: an unknown profile or a Localhost one that cannot be read.
    """
    if privileged:
        return None
    path = ""
    if isinstance(sec.get("seccomp"), dict):
        profile = sec["seccomp"]
        kind = int(profile.get("profile_type", 0))
        if kind == 0:
            path = "runtime/default"
        elif kind == 1:
            path = "unconfined"
        else:
            ref = str(profile.get("localhost_ref", ""))
            if not ref:
                msg = "localhost seccomp profile requires localhost_ref"
                raise InvalidArgumentError(msg)
            path = "localhost/" + ref
    else:
        path = str(sec.get("seccomp_profile_path") or "")
    if path in {"", "unconfined"}:
        return None
    if path in {"runtime/default", "docker/default"}:
        return default_seccomp(caps)
    if path.startswith("localhost/"):
        file = path.removeprefix("localhost/")
        try:
            raw = Path(file).read_bytes()
        except OSError as exc:
            msg = f"failed to load seccomp profile {file!r}: {exc.strerror}"
            raise InvalidArgumentError(msg) from exc
        return docker_profile_to_oci(raw, caps)
    msg = f"unsupported seccomp profile {path!r}"
    raise InvalidArgumentError(msg)


# -- devices -----------------------------------------------------------------------------------


def device(
    host_path: str, container_path: str, permissions: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """An OCI device and its cgroup rule for a host device node.

    Raises:
        InvalidArgumentError: ``host_path`` is not a device node.
    """
    try:
        st = os.stat(host_path)
    except OSError as exc:
        msg = f"failed to get device {host_path!r}: {exc.strerror}"
        raise InvalidArgumentError(msg) from exc
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        msg = f"{host_path!r} is not a device node"
        raise InvalidArgumentError(msg)
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    dev = {
        "path": container_path or host_path,
        "type": kind,
        "major": major,
        "minor": minor,
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }
    rule = {
        "allow": True,
        "type": kind,
        "major": major,
        "minor": minor,
        "access": permissions or "rwm",
    }
    return dev, rule


def host_devices() -> list[dict[str, Any]]:
    """Every device node under the host's ``/dev`` (for privileged containers).

    ``/dev/pts`` and ``/dev/mqueue``, ``/dev/shm`` are left out: the
    container has its own.
    """
    out = []
    skip = {"/dev/pts", "/dev/shm", "/dev/mqueue", "/dev/console"}  # noqa: S108
    for root, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        for name in files:
            path = os.path.join(root, name)
            if path in skip:
                continue
            with contextlib.suppress(InvalidArgumentError):
                out.append(device(path, path, "rwm")[0])
    return out
