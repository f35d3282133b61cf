"""AppArmor for CRI containers: which profile a container runs under, as containerd's CRI decides.

- On a host without AppArmor (or with ``disable_apparmor``), a container that
  asks for any profile but ``Unconfined`` is refused with containerd's error,
  ``apparmor is not supported``; one that asks for nothing runs unconfined.
- On a host with AppArmor, no profile means ``RuntimeDefault``: the profile
  ``cri-containerd.apparmor.d``, loaded with ``apparmor_parser`` the first time
  it is needed (privileged containers stay unconfined). ``Localhost`` names a
  profile that must already be loaded.

The host check is upstream's: ``/sys/kernel/security/apparmor`` exists,
``/sbin/apparmor_parser`` exists, the module's ``enabled`` parameter reads
``Y``, and the ``container`` environment variable is unset (not nested).

Importing this module must not import grpc.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Final

from pycontainerd.core.errdefs import UnknownError
from pycontainerd.core.gostr import go_quote

__all__ = ["DEFAULT_PROFILE", "default_profile_text", "host_supports", "profile_for"]

DEFAULT_PROFILE: Final = "cri-containerd.apparmor.d"
SECURITYFS: Final = Path("/sys/kernel/security/apparmor")
PARSER: Final = Path("/sbin/apparmor_parser")
ENABLED: Final = Path("/sys/module/apparmor/parameters/enabled")

# SecurityProfile.ProfileType
RUNTIME_DEFAULT, UNCONFINED, LOCALHOST = 0, 1, 2
_LOCALHOST_PREFIX: Final = "localhost/"


def host_supports(
    securityfs: Path = SECURITYFS, parser: Path = PARSER, enabled: Path = ENABLED
) -> bool:
    """Whether this host can confine containers with AppArmor (upstream's check)."""
    nested = os.environ.get("container")  # noqa: SIM112 - the name init systems set
    if nested or not securityfs.exists() or not parser.exists():
        return False
    try:
        return enabled.read_text().startswith("Y")
    except OSError:
        return False


def _requested(sec: dict[str, Any]) -> tuple[int, str] | None:
    """The (type, localhost ref) the security context asks for; None: nothing asked.

    ``apparmor`` wins over the deprecated ``apparmor_profile`` string
    (``runtime/default``, ``docker-default``, ``unconfined``, ``localhost/<name>``).
    """
    if isinstance(sec.get("apparmor"), dict):
        profile = sec["apparmor"]
        return int(profile.get("profile_type", 0)), str(profile.get("localhost_ref", ""))
    path = str(sec.get("apparmor_profile") or "")
    if not path:
        return None
    if path in {"runtime/default", "docker-default"}:
        return RUNTIME_DEFAULT, ""
    if path == "unconfined":
        return UNCONFINED, ""
    if path.startswith(_LOCALHOST_PREFIX):
        return LOCALHOST, path.removeprefix(_LOCALHOST_PREFIX)
    msg = f"failed to generate apparmor spec opts: invalid profile {go_quote(path)}"
    raise UnknownError(msg)


def profile_for(
    sec: dict[str, Any],
    *,
    privileged: bool,
    enabled: bool,
    profiles: Path = SECURITYFS / "profiles",
) -> str | None:
    """The AppArmor profile for ``process.apparmorProfile`` (None: unconfined).

    Raises:
        UnknownError: AppArmor is asked for on a host without it, a Localhost
            profile is not loaded, the request is malformed, or the default
            profile could not be loaded: containerd's plain errors and texts
            (after ``failed to generate apparmor spec opts:``).
    """
    requested = _requested(sec)
    prefix = "failed to generate apparmor spec opts: "
    if not enabled:
        if requested is not None and requested[0] != UNCONFINED:
            raise UnknownError(prefix + "apparmor is not supported")
        return None
    kind, ref = requested if requested is not None else (RUNTIME_DEFAULT, "")
    if kind != LOCALHOST and ref:
        msg = "apparmor config invalid LocalhostRef must only be set if ProfileType is Localhost"
        raise UnknownError(prefix + msg)
    if kind == UNCONFINED or (kind == RUNTIME_DEFAULT and privileged):
        return None
    if kind == RUNTIME_DEFAULT:
        ensure_loaded(DEFAULT_PROFILE, profiles)
        return DEFAULT_PROFILE
    if kind == LOCALHOST:
        name = ref.removeprefix(_LOCALHOST_PREFIX)
        if not is_loaded(name, profiles):
            raise UnknownError(prefix + f"apparmor profile not found {name}")
        return name
    raise UnknownError(prefix + "apparmor unknown ProfileType")


def is_loaded(name: str, profiles: Path = SECURITYFS / "profiles") -> bool:
    """Whether the kernel has the profile ``name`` (a line ``<name> (<mode>)``)."""
    try:
        lines = profiles.read_text().splitlines()
    except OSError as exc:
        msg = f"failed to read {profiles}: {exc.strerror}"
        raise UnknownError(msg) from None
    return any(line.startswith(name + " ") for line in lines)


def ensure_loaded(name: str, profiles: Path = SECURITYFS / "profiles") -> None:
    """Load the default profile as ``name`` unless the kernel already has it."""
    if is_loaded(name, profiles):
        return
    with tempfile.NamedTemporaryFile("w", prefix=name, dir=os.environ.get("XDG_RUNTIME_DIR")) as f:
        f.write(default_profile_text(name))
        f.flush()
        done = subprocess.run(
            [str(PARSER), "-Kr", f.name], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        out = (done.stdout + done.stderr).strip()
        msg = (
            f"load apparmor profile {f.name}: parser error({out!r}): exit status {done.returncode}"
        )
        raise UnknownError(msg)


def default_profile_text(name: str) -> str:
    """The default profile, written for this project.

    The container may use the network, its capabilities and its own files. It
    may not mount, change kernel state through ``/proc`` or ``/sys`` (the
    cgroup filesystem aside, which the runtime mounts read-only anyway), read
    firmware or security state, or signal and trace processes outside its own
    profile.
    """
    sys_writable_never = ("block", "bus", "class", "dev", "devices", "kernel", "module", "power")
    rules = [
        "network,",
        "capability,",
        "file,",
        "umount,",
        "deny mount,",
        f"signal (send, receive) peer={name},",
        "signal (receive) peer=unconfined,",
        f"ptrace (trace, read, tracedby, readby) peer={name},",
        "deny @{PROC}/* w,",
        "deny @{PROC}/sys/** w,",
        "deny @{PROC}/sysrq-trigger rwklx,",
        "deny @{PROC}/kcore rwklx,",
        *(f"deny /sys/{d}/** wklx," for d in sys_writable_never),
        "deny /sys/fs/{bpf,fuse,pstore,selinux,smackfs}/** wklx,",
        "deny /sys/firmware/** rwklx,",
        "deny /sys/kernel/security/** rwklx,",
    ]
    body = "".join(f"  {rule}\n" for rule in rules)
    return (
        "#include <tunables/global>\n\n"
        f"profile {name} flags=(attach_disconnected, mediate_deleted) {{\n"
        "  #include <abstractions/base>\n\n"
        f"{body}}}\n"
    )
