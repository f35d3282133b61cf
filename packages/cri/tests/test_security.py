"""Container security contexts: users and groups from the image, capabilities, privileged,
no_new_privs, read-only root, masked/read-only paths, seccomp, devices.

The integration tests run real containers (runc, overlayfs, the CNI bridge)
and read what the kernel reports in ``/proc/<pid>/status``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError, UnknownError
from pycontainerd.cri import apparmor, containers, security

if TYPE_CHECKING:
    from pycontainerd.cri.testing import Cri

IMAGE = "localhost/pycontainerd-test/secure:1"
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "www-data:x:33:33:www-data:/var/www:/bin/false\n"
    "app:x:1000:1000::/home/app:/bin/sh\n"
)
GROUPS = "root:x:0:\nwww-data:x:33:\napp:x:1000:\nextra:x:5000:app,www-data\nusers:x:100:app\n"


# -- pure functions -----------------------------------------------------------------------------


def test_resolve_user_names_numbers_and_groups() -> None:
    users = security.parse_passwd(PASSWD + "broken line\n")
    groups = security.parse_group(GROUPS)
    assert security.resolve_user("app", users, groups) == security.User(1000, 1000, (5000, 100))
    # a numeric user takes its passwd entry's group and memberships
    assert security.resolve_user("33", users, groups, [7]) == security.User(33, 33, (5000, 7))
    # unknown numeric user: gid 0, no lookups
    assert security.resolve_user("4242", users, groups) == security.User(4242, 0, ())
    assert security.resolve_user("app:www-data", users, groups).gid == 33
    assert security.resolve_user("1003:1004", None, None) == security.User(1003, 1004, ())
    with pytest.raises(NotFoundError, match="no users found"):
        security.resolve_user("ghost", users, groups)
    with pytest.raises(NotFoundError, match="no groups found"):
        security.resolve_user("app:ghosts", users, groups)


def test_user_string_from_the_security_context() -> None:
    assert security.user_string({}, "www-data:1004") == "www-data:1004"
    assert security.user_string({"run_as_user": {"value": "7"}}, "app") == "7"
    assert security.user_string({"run_as_user": {}}, "app") == "0"
    sec = {"run_as_username": "app", "run_as_group": {"value": "9"}}
    assert security.user_string(sec, "") == "app:9"
    with pytest.raises(InvalidArgumentError, match="user group is specified without user"):
        security.user_string({"run_as_group": {"value": "9"}}, "app")


def test_capabilities_add_drop_and_all() -> None:
    default = ["CAP_CHOWN", "CAP_KILL"]
    caps = security.capabilities(
        {"capabilities": {"add_capabilities": ["NET_ADMIN"], "drop_capabilities": ["chown"]}},
        default,
        privileged=False,
    )
    assert caps == ["CAP_KILL", "CAP_NET_ADMIN"]
    every = security.all_capabilities()
    add_all = {"capabilities": {"add_capabilities": ["ALL"], "drop_capabilities": ["KILL"]}}
    assert security.capabilities(add_all, default, privileged=False) == [
        c for c in every if c != "CAP_KILL"
    ]
    drop_all = {"capabilities": {"drop_capabilities": ["ALL"], "add_capabilities": ["KILL"]}}
    assert security.capabilities(drop_all, default, privileged=False) == ["CAP_KILL"]
    assert security.capabilities({}, default, privileged=True) == every


def test_docker_profile_becomes_oci_seccomp() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO"},
            {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        ],
    }
    oci = security.docker_profile_to_oci(json.dumps(profile), ["CAP_KILL"])
    assert oci == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "syscalls": [{"names": ["chmod"], "action": "SCMP_ACT_ERRNO"}],
    }
    with pytest.raises(InvalidArgumentError):
        security.docker_profile_to_oci("{", [])
    default = security.default_seccomp(["CAP_KILL"])
    assert default["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = default["syscalls"][0]["names"]
    assert "read" in allowed
    assert "mount" not in allowed
    assert "mount" in security.default_seccomp(["CAP_SYS_ADMIN"])["syscalls"][0]["names"]


def test_apparmor_profile_decisions(tmp_path: Path) -> None:
    default = {"apparmor": {"profile_type": apparmor.RUNTIME_DEFAULT}}
    unconfined = {"apparmor": {"profile_type": apparmor.UNCONFINED}}
    local = {"apparmor": {"profile_type": apparmor.LOCALHOST, "localhost_ref": "localhost/mine"}}
    prefix = "failed to generate apparmor spec opts: "
    # a host without AppArmor: asking for any confinement fails loudly, as upstream
    for sec in (default, local, {"apparmor_profile": "runtime/default"}):
        with pytest.raises(UnknownError) as info:
            apparmor.profile_for(sec, privileged=False, enabled=False)
        assert info.value.message == prefix + "apparmor is not supported"
    assert apparmor.profile_for(unconfined, privileged=False, enabled=False) is None
    assert apparmor.profile_for({}, privileged=False, enabled=False) is None

    # a host with AppArmor (its loaded profiles read from a file of the kernel's format)
    profiles = tmp_path / "profiles"
    profiles.write_text(f"mine (enforce)\n{apparmor.DEFAULT_PROFILE} (enforce)\n")

    def on(sec: dict[str, Any], *, privileged: bool = False) -> str | None:
        return apparmor.profile_for(sec, privileged=privileged, enabled=True, profiles=profiles)

    assert on({}) == on(default) == apparmor.DEFAULT_PROFILE  # nothing asked: RuntimeDefault
    assert on(unconfined) is None
    assert on(local) == "mine"
    assert on({}, privileged=True) is None
    bad: list[tuple[dict[str, Any], str]] = [
        ({"apparmor": {"profile_type": apparmor.LOCALHOST, "localhost_ref": "theirs"}},
         "apparmor profile not found theirs"),
        ({"apparmor": {"profile_type": apparmor.RUNTIME_DEFAULT, "localhost_ref": "x"}},
         "apparmor config invalid LocalhostRef must only be set if ProfileType is Localhost"),
        ({"apparmor_profile": "bogus"}, 'invalid profile "bogus"'),
    ]  # fmt: skip
    for wrong, text in bad:
        with pytest.raises(UnknownError) as info:
            on(wrong)
        assert info.value.message == prefix + text


def test_apparmor_host_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    securityfs, parser, enabled = tmp_path / "apparmor", tmp_path / "parser", tmp_path / "enabled"
    paths = (securityfs, parser, enabled)
    monkeypatch.delenv("container", raising=False)
    assert not apparmor.host_supports(*paths)
    securityfs.mkdir()
    parser.touch()
    enabled.write_text("N\n")
    assert not apparmor.host_supports(*paths)
    enabled.write_text("Y\n")
    assert apparmor.host_supports(*paths)
    monkeypatch.setenv("container", "lxc")  # nested: upstream leaves AppArmor alone
    assert not apparmor.host_supports(*paths)
    text = apparmor.default_profile_text(apparmor.DEFAULT_PROFILE)
    assert f"profile {apparmor.DEFAULT_PROFILE} flags=" in text
    assert "deny mount," in text
    assert text.count("{") == text.count("}")


# -- real containers ----------------------------------------------------------------------------


def _import(cri: Cri) -> None:
    cri.import_image(
        IMAGE,
        ("sh", "sleep", "cat", "chmod", "touch", "id"),
        {
            "etc/passwd": PASSWD.encode(),
            "etc/group": GROUPS.encode(),
            "etc/secret": b"top secret\n",
        },
    )


def _pod(cri: Cri, name: str) -> tuple[pb.PodSandboxConfig, str]:
    """Import the test image and run a pod ``name``: its config and sandbox id."""
    _import(cri)
    pod = cri.pod_config(name)
    return pod, cri.run(pod)


def _create(
    cri: Cri,
    sid: str,
    pod: pb.PodSandboxConfig,
    name: str,
    *,
    sec: pb.LinuxContainerSecurityContext | None = None,
    devices: list[pb.Device] | None = None,
) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=IMAGE),
        command=["sleep", "1000"],
        devices=devices or [],
    )
    if sec is not None:
        config.linux.security_context.CopyFrom(sec)
    resp = cri.runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=sid, config=config, sandbox_config=pod)
    )
    return str(resp.container_id)


def _start(
    cri: Cri, sid: str, pod: pb.PodSandboxConfig, name: str, **kw: object
) -> tuple[str, int]:
    cid = _create(cri, sid, pod, name, **kw)  # type: ignore[arg-type]
    cri.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    st = cri.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True))
    return cid, int(json.loads(st.info["info"])["pid"])


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _exec(cri: Cri, cid: str, *cmd: str) -> pb.ExecSyncResponse:
    resp: pb.ExecSyncResponse = cri.runtime.ExecSync(
        pb.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=10)
    )
    return resp


def _cap_mask(names: list[str]) -> int:
    return sum(1 << security.CAPABILITY_NAMES.index(n) for n in names)


@pytest.mark.system
def test_users_and_groups_from_the_image(cri: Cri) -> None:
    pod, sid = _pod(cri, "users")

    sec = pb.LinuxContainerSecurityContext(run_as_username="app", supplemental_groups=[1234])
    _, pid = _start(cri, sid, pod, "by-name", sec=sec)
    st = _status(pid)
    assert st["Uid"].split()[0] == "1000"
    assert st["Gid"].split()[0] == "1000"
    assert sorted(st["Groups"].split()) == ["100", "1234", "5000"]

    sec = pb.LinuxContainerSecurityContext(run_as_user=pb.Int64Value(value=33))
    _, pid = _start(cri, sid, pod, "by-uid", sec=sec)
    st = _status(pid)
    assert (st["Uid"].split()[0], st["Gid"].split()[0]) == ("33", "33")
    assert st["Groups"].split() == ["5000"]

    sec = pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=1001), run_as_group=pb.Int64Value(value=1002)
    )
    _, pid = _start(cri, sid, pod, "uid-gid", sec=sec)
    st = _status(pid)
    assert (st["Uid"].split()[0], st["Gid"].split()[0]) == ("1001", "1002")

    with pytest.raises(grpc.RpcError) as info:
        _create(cri, sid, pod, "ghost", sec=pb.LinuxContainerSecurityContext(run_as_username="x"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no users found" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        _create(
            cri,
            sid,
            pod,
            "group-only",
            sec=pb.LinuxContainerSecurityContext(run_as_group=pb.Int64Value(value=5)),
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # a failed create leaves no snapshot behind: the same name works once fixed
    _start(cri, sid, pod, "ghost", sec=pb.LinuxContainerSecurityContext(run_as_username="app"))


@pytest.mark.system
def test_capabilities_privileged_and_no_new_privs(cri: Cri) -> None:
    pod, sid = _pod(cri, "caps")

    sec = pb.LinuxContainerSecurityContext(
        capabilities=pb.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["CHOWN"]),
        no_new_privs=True,
    )
    _, pid = _start(cri, sid, pod, "some-caps", sec=sec)
    st = _status(pid)
    eff = int(st["CapEff"], 16)
    assert eff & _cap_mask(["CAP_NET_ADMIN"])
    assert not eff & _cap_mask(["CAP_CHOWN"])
    assert eff & _cap_mask(["CAP_KILL"])
    assert st["NoNewPrivs"] == "1"

    sec = pb.LinuxContainerSecurityContext(capabilities=pb.Capability(drop_capabilities=["ALL"]))
    _, pid = _start(cri, sid, pod, "no-caps", sec=sec)
    assert int(_status(pid)["CapBnd"], 16) == 0
    assert _status(pid)["NoNewPrivs"] == "0"

    # privileged needs a privileged pod
    with pytest.raises(grpc.RpcError) as info:
        _create(cri, sid, pod, "priv", sec=pb.LinuxContainerSecurityContext(privileged=True))
    assert "no privileged container allowed in sandbox" in (info.value.details() or "")

    ppod = cri.pod_config("privileged-pod")
    ppod.linux.security_context.privileged = True
    psid = cri.run(ppod)
    _, pid = _start(cri, psid, ppod, "priv", sec=pb.LinuxContainerSecurityContext(privileged=True))
    every = security.all_capabilities()
    assert int(_status(pid)["CapEff"], 16) == _cap_mask(every)
    # no masked paths, a writable /sys and the host's devices
    mounts = Path(f"/proc/{pid}/mountinfo").read_text()
    assert " /proc/kcore " not in mounts
    sys_line = next(line for line in mounts.splitlines() if line.split()[4] == "/sys")
    assert sys_line.split()[5].startswith("rw")
    assert Path(f"/proc/{pid}/root/dev/null").exists()
    host_tty = next((d for d in ("/dev/tty0", "/dev/tty1", "/dev/loop0") if os.path.exists(d)), "")
    if host_tty:
        assert Path(f"/proc/{pid}/root{host_tty}").exists()


@pytest.mark.system
def test_read_only_root_masked_and_read_only_paths(cri: Cri) -> None:
    pod, sid = _pod(cri, "paths")

    sec = pb.LinuxContainerSecurityContext(
        readonly_rootfs=True, masked_paths=["/etc/secret"], readonly_paths=["/dev/shm"]
    )
    cid, _ = _start(cri, sid, pod, "locked", sec=sec)
    touched = _exec(cri, cid, "touch", "/newfile")
    assert touched.exit_code != 0
    assert b"Read-only file system" in touched.stderr
    assert _exec(cri, cid, "cat", "/etc/secret").stdout == b""
    shm = _exec(cri, cid, "touch", "/dev/shm/x")
    assert shm.exit_code != 0
    assert b"Read-only file system" in shm.stderr

    # defaults: the file is readable, /proc/kcore masked, the root writable
    cid, _ = _start(cri, sid, pod, "open")
    assert _exec(cri, cid, "cat", "/etc/secret").stdout == b"top secret\n"
    assert _exec(cri, cid, "touch", "/newfile").exit_code == 0
    assert _exec(cri, cid, "cat", "/proc/kcore").stdout == b""


@pytest.mark.system
def test_seccomp_profiles(cri: Cri) -> None:
    pod, sid = _pod(cri, "seccomp")

    def mode(profile: pb.SecurityProfile | None) -> tuple[str, str]:
        sec = pb.LinuxContainerSecurityContext()
        if profile is not None:
            sec.seccomp.CopyFrom(profile)
        cid, pid = _start(cri, sid, pod, f"sc-{len(modes)}", sec=sec)
        modes.append(cid)
        return cid, _status(pid)["Seccomp"]

    modes: list[str] = []
    assert mode(None)[1] == "0"
    assert mode(pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined))[1] == "0"
    cid, value = mode(pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))
    assert value == "2"
    assert _exec(cri, cid, "id", "-u").stdout == b"0\n"  # ordinary syscalls work

    profile = cri.base / "block-chmod.json"
    profile.write_text(
        json.dumps(
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO"}],
            }
        )
    )
    cid, value = mode(
        pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(profile))
    )
    assert value == "2"
    res = _exec(cri, cid, "chmod", "400", "/etc/secret")
    assert res.exit_code != 0
    assert b"Operation not permitted" in res.stderr

    with pytest.raises(grpc.RpcError) as info:
        mode(
            pb.SecurityProfile(
                profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(cri.base / "none")
            )
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "failed to load seccomp profile" in (info.value.details() or "")


@pytest.mark.system
def test_apparmor_on_this_host(cri: Cri) -> None:
    _import(cri)
    pod = cri.pod_config("apparmor")
    sid = cri.run(pod)
    sec = pb.LinuxContainerSecurityContext()
    sec.apparmor.CopyFrom(pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined))
    _start(cri, sid, pod, "unconfined", sec=sec)  # allowed with or without AppArmor
    sec.apparmor.CopyFrom(pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))
    if containers.apparmor_enabled():
        _, pid = _start(cri, sid, pod, "confined", sec=sec)
        current = Path(f"/proc/{pid}/attr/current").read_text()
        assert current.startswith(apparmor.DEFAULT_PROFILE)
        return
    with pytest.raises(grpc.RpcError) as info:
        _create(cri, sid, pod, "confined", sec=sec)
    assert info.value.code() == grpc.StatusCode.UNKNOWN
    assert info.value.details() == (
        "failed to generate apparmor spec opts: apparmor is not supported"
    )
    listed = cri.runtime.ListContainers(pb.ListContainersRequest()).containers
    assert "confined" not in {c.metadata.name for c in listed}  # nothing left behind


@pytest.mark.system
def test_devices(cri: Cri) -> None:
    pod, sid = _pod(cri, "devices")
    dev = pb.Device(host_path="/dev/null", container_path="/dev/mynull", permissions="rw")
    cid, pid = _start(cri, sid, pod, "dev", devices=[dev])
    node = os.stat(f"/proc/{pid}/root/dev/mynull")
    assert (os.major(node.st_rdev), os.minor(node.st_rdev)) == (1, 3)
    assert _exec(cri, cid, "sh", "-c", "echo hi > /dev/mynull").exit_code == 0

    with pytest.raises(grpc.RpcError) as info:
        _create(cri, sid, pod, "nodev", devices=[pb.Device(host_path="/etc/hostname")])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
