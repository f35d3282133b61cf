"""containerd's default OCI spec and the options that adjust it."""

from __future__ import annotations

import json

from pycontainerd.client import oci


def test_default_spec_matches_containerds() -> None:
    spec = oci.generate_spec("ns1", "web")
    assert spec["root"] == {"path": "rootfs"}
    proc = spec["process"]
    assert proc["cwd"] == "/"
    assert proc["user"] == {"uid": 0, "gid": 0}
    assert proc["noNewPrivileges"] is True
    assert proc["env"] == [oci.DEFAULT_PATH_ENV]
    assert proc["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    caps = proc["capabilities"]
    assert set(caps) == {"bounding", "permitted", "effective"}  # no inheritable, no ambient
    assert len(caps["bounding"]) == 14
    assert "CAP_SYS_ADMIN" not in caps["bounding"]
    assert [m["destination"] for m in spec["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/run",
    ]
    linux = spec["linux"]
    assert linux["cgroupsPath"] == "/ns1/web"
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "ipc", "uts", "mount", "network"]
    assert "/proc/kcore" in linux["maskedPaths"]
    assert "/proc/sys" in linux["readonlyPaths"]
    assert linux["resources"]["devices"] == [{"allow": False, "access": "rwm"}]


def test_specs_do_not_share_state() -> None:
    a = oci.generate_spec("ns", "a", oci.with_privileged)
    b = oci.generate_spec("ns", "b")
    assert "CAP_SYS_ADMIN" in a["process"]["capabilities"]["bounding"]
    assert "CAP_SYS_ADMIN" not in b["process"]["capabilities"]["bounding"]
    assert "ro" in next(m for m in b["mounts"] if m["destination"] == "/sys")["options"]


def test_options_compose_in_order() -> None:
    spec = oci.generate_spec(
        "default",
        "t1",
        oci.with_process_args("/bin/sh", "-c", "echo hi"),
        oci.with_env(["A=1", "PATH=/bin"]),
        oci.with_env(["A=2"]),
        oci.with_cwd("/tmp"),
        oci.with_user_id(1000, 100),
        oci.with_tty,
        oci.with_hostname("box"),
        oci.with_memory_limit(64 << 20),
        oci.with_cpus(0.5),
        oci.with_annotations({"k": "v"}),
        oci.with_rootfs_path("/srv/root"),
        oci.with_mounts(
            [{"destination": "/data", "type": "bind", "source": "/srv", "options": ["rbind"]}]
        ),
    )
    proc = spec["process"]
    assert proc["args"] == ["/bin/sh", "-c", "echo hi"]
    assert proc["env"] == ["PATH=/bin", "A=2", "TERM=xterm"]
    assert proc["cwd"] == "/tmp"
    assert proc["user"] == {"uid": 1000, "gid": 100}
    assert proc["terminal"] is True
    assert spec["hostname"] == "box"
    assert spec["linux"]["resources"]["memory"] == {"limit": 64 << 20}
    assert spec["linux"]["resources"]["cpu"] == {"quota": 50_000, "period": 100_000}
    assert spec["annotations"] == {"k": "v"}
    assert spec["root"] == {"path": "/srv/root"}
    assert spec["mounts"][-1]["destination"] == "/data"


def test_host_network_and_privileged() -> None:
    spec = oci.generate_spec("default", "t1", oci.with_host_network, oci.with_privileged)
    assert "network" not in [n["type"] for n in spec["linux"]["namespaces"]]
    dests = [m["destination"] for m in spec["mounts"]]
    assert "/etc/hosts" in dests
    assert "/etc/resolv.conf" in dests
    assert spec["linux"]["maskedPaths"] == []
    assert spec["linux"]["readonlyPaths"] == []
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]


def test_spec_bytes_is_json() -> None:
    spec = oci.generate_spec("default", "t1")
    assert json.loads(oci.spec_bytes(spec)) == spec
