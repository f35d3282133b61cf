"""The runtime v2 manager's parts that need no daemon: names, addresses, bundles, config."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from typing import TYPE_CHECKING

import pluggy
import pytest

from pycontainerd.api.events import task_pb2
from pycontainerd.core.errdefs import AlreadyExistsError, InvalidArgumentError, UnknownError
from pycontainerd.core.plugin import PROJECT, PluginType, hookimpl
from pycontainerd.events.exchange import Exchange
from pycontainerd.runtime import hookspecs, plugin
from pycontainerd.runtime.bundle import Bundle
from pycontainerd.runtime.manager import TaskManager, binary_name, parse_address

if TYPE_CHECKING:
    from pathlib import Path


def make_manager(tmp_path: Path, **kwargs: object) -> TaskManager:
    return TaskManager(
        state_dir=tmp_path / "state",
        root_dir=tmp_path / "root",
        grpc_address=str(tmp_path / "c.sock"),
        ttrpc_address=str(tmp_path / "c.sock.ttrpc"),
        events=Exchange(),
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("runtime", "name"),
    [
        ("io.containerd.runc.v2", "containerd-shim-runc-v2"),
        ("io.containerd.pyrunc.v2", "containerd-shim-pyrunc-v2"),
        ("example.com.kata.v2", "containerd-shim-kata-v2"),
        ("runc.v1", "containerd-shim-runc-v1"),
        ("runc", ""),
        (".v2", ""),
        ("", ""),
    ],
)
def test_binary_name_follows_containerds_rule(runtime: str, name: str) -> None:
    assert binary_name(runtime) == name


@pytest.mark.parametrize(
    ("output", "address"),
    [
        ("unix:///run/s/abc\n", "unix:///run/s/abc"),
        ("/run/s/abc", "unix:///run/s/abc"),
        ('{"version":2,"address":"unix:///run/s/x","protocol":"ttrpc"}', "unix:///run/s/x"),
        ('{"version":3,"address":"unix:///run/s/y"}', "unix:///run/s/y"),
    ],
)
def test_parse_address_plain_and_bootstrap_json(output: str, address: str) -> None:
    assert parse_address(output) == address


@pytest.mark.parametrize(
    ("output", "text"),
    [
        ("", "printed no address"),
        ('{"version":2,"address":"unix:///x","protocol":"grpc"}', "unsupported shim protocol"),
        ("{not json", "invalid bootstrap"),
    ],
)
def test_parse_address_rejects_what_it_cannot_use(output: str, text: str) -> None:
    with pytest.raises(UnknownError, match=text):
        parse_address(output)


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_runc_v2_is_served_by_our_shim_by_default(tmp_path: Path) -> None:
    ours = _executable(tmp_path / "bin" / "containerd-shim-pyrunc-v2")
    _executable(tmp_path / "bin" / "containerd-shim-runc-v2")
    m = make_manager(tmp_path, env=lambda: {"PATH": str(tmp_path / "bin")})
    assert m.resolve_binary("io.containerd.runc.v2") == str(ours)


def test_one_config_line_hands_runc_v2_to_the_go_shim(tmp_path: Path) -> None:
    _executable(tmp_path / "bin" / "containerd-shim-pyrunc-v2")
    go = _executable(tmp_path / "bin" / "containerd-shim-runc-v2")
    m = make_manager(
        tmp_path,
        shims={"io.containerd.runc.v2": "containerd-shim-runc-v2"},
        env=lambda: {"PATH": str(tmp_path / "bin")},
    )
    assert m.resolve_binary("io.containerd.runc.v2") == str(go)


def test_opt_bin_comes_first_on_path(tmp_path: Path) -> None:
    opt = _executable(tmp_path / "opt" / "bin" / "containerd-shim-x-v1")
    _executable(tmp_path / "usr" / "containerd-shim-x-v1")
    path = f"{tmp_path / 'opt' / 'bin'}:{tmp_path / 'usr'}"
    m = make_manager(tmp_path, env=lambda: {"PATH": path})
    assert m.resolve_binary("io.containerd.x.v1") == str(opt)


def test_absolute_runtime_and_runtime_path_are_used_directly(tmp_path: Path) -> None:
    m = make_manager(tmp_path, env=lambda: {"PATH": ""})
    assert m.resolve_binary("/opt/shim") == "/opt/shim"
    assert m.resolve_binary("io.containerd.runc.v2", "/usr/bin/x") == "/usr/bin/x"
    with pytest.raises(InvalidArgumentError, match="must be absolute"):
        m.resolve_binary("io.containerd.runc.v2", "relative/shim")


def test_missing_shim_binary_has_upstreams_text(tmp_path: Path) -> None:
    m = make_manager(tmp_path, env=lambda: {"PATH": str(tmp_path)})
    with pytest.raises(UnknownError) as excinfo:
        m.resolve_binary("io.containerd.nope.v1")
    assert str(excinfo.value) == (
        'failed to resolve runtime path: runtime "io.containerd.nope.v1" binary not installed '
        '"containerd-shim-nope-v1": file does not exist: unknown'
    )


def test_invalid_runtime_name(tmp_path: Path) -> None:
    m = make_manager(tmp_path, env=lambda: {"PATH": ""})
    with pytest.raises(InvalidArgumentError, match="invalid runtime name runc"):
        m.resolve_binary("runc")


def test_hook_answers_for_runtimes_the_config_does_not_name(tmp_path: Path) -> None:
    found = _executable(tmp_path / "elsewhere" / "my-shim")

    class Impl:
        @hookimpl
        def pycontainerd_runtime_shim_binary(self, runtime: str) -> str | None:
            return str(found) if runtime == "com.example.mine.v1" else None

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(Impl())
    assert hookspecs.shim_binary(pm, "com.example.mine.v1") == str(found)
    assert hookspecs.shim_binary(pm, "io.containerd.runc.v2") is None
    m = make_manager(
        tmp_path,
        resolve=lambda r: hookspecs.shim_binary(pm, r),
        env=lambda: {"PATH": ""},
    )
    assert m.resolve_binary("com.example.mine.v1") == str(found)


def test_shim_env_carries_upstreams_variables(tmp_path: Path) -> None:
    m = make_manager(tmp_path, env=lambda: {"PATH": "/x"})
    env = m.shim_env("ns1")
    assert env["TTRPC_ADDRESS"] == str(tmp_path / "c.sock.ttrpc")
    assert env["GRPC_ADDRESS"] == str(tmp_path / "c.sock")
    assert env["NAMESPACE"] == "ns1"
    assert env["GOMAXPROCS"] == "2"
    assert env["PATH"] == "/x"


def test_bundle_layout(tmp_path: Path) -> None:
    spec = b'{"ociVersion": "1.0.2"}'
    b = Bundle.create(tmp_path / "state", tmp_path / "root", "ns", "t1", spec)
    assert b.path == tmp_path / "state" / "ns" / "t1"
    assert stat.S_IMODE(b.path.stat().st_mode) == 0o700
    assert stat.S_IMODE(b.path.parent.stat().st_mode) == 0o711
    assert b.config_path.read_bytes() == spec
    assert stat.S_IMODE((b.path / "rootfs").stat().st_mode) == 0o711
    assert os.readlink(b.path / "work") == str(tmp_path / "root" / "ns" / "t1")
    assert stat.S_ISFIFO(b.log_path.stat().st_mode)
    b.write("address", "unix:///x")
    assert b.read("address") == "unix:///x"
    assert b.read("missing") == ""
    assert not b.exit_published
    b.mark_exit_published()
    assert Bundle(tmp_path / "state", tmp_path / "root", "ns", "t1").exit_published
    b.delete()
    assert not b.path.exists()
    assert not (tmp_path / "root" / "ns" / "t1").exists()
    b.delete()  # twice is fine
    b.mark_exit_published()  # a gone bundle is not an error


def test_bundle_of_a_spec_mapping_gids_belongs_to_the_remapped_root_gid(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("chown to another gid needs root")
        pytest.skip("chown to another gid needs root")
    mappings = [
        {"containerID": 1, "hostID": 300001, "size": 10},
        {"containerID": 0, "hostID": 300000, "size": 1},
    ]
    spec = json.dumps({"linux": {"gidMappings": mappings}}).encode()
    b = Bundle.create(tmp_path / "state", tmp_path / "root", "ns", "u1", spec)
    st = b.path.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o710, 300000)
    assert stat.S_IMODE(b.path.parent.stat().st_mode) == 0o711
    assert stat.S_IMODE((b.path / "rootfs").stat().st_mode) == 0o711
    plain = Bundle.create(tmp_path / "state", tmp_path / "root", "ns", "u2", b'{"linux": {}}')
    assert (stat.S_IMODE(plain.path.stat().st_mode), plain.path.stat().st_gid) == (0o700, 0)


def test_bundle_rejects_a_bad_id_and_a_second_create(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="invalid task id a/b"):
        Bundle.create(tmp_path / "s", tmp_path / "r", "ns", "a/b", b"{}")
    Bundle.create(tmp_path / "s", tmp_path / "r", "ns", "t1", b"{}")
    with pytest.raises(AlreadyExistsError):
        Bundle.create(tmp_path / "s", tmp_path / "r", "ns", "t1", b"{}")


@pytest.mark.parametrize("spec", [b"not json", b"[1, 2]"])
async def test_create_rejects_a_bad_spec_before_touching_disk(tmp_path: Path, spec: bytes) -> None:
    m = make_manager(tmp_path, env=lambda: {"PATH": ""})
    with pytest.raises(InvalidArgumentError, match="invalid OCI spec"):
        await m.create("ns", "t1", spec=spec, runtime="io.containerd.runc.v2")
    assert not (tmp_path / "state" / "ns" / "t1").exists()


async def test_create_with_a_missing_shim_leaves_no_bundle(tmp_path: Path) -> None:
    m = make_manager(tmp_path, env=lambda: {"PATH": str(tmp_path)})
    with pytest.raises(UnknownError, match=r"^failed to start shim: failed to resolve"):
        await m.create("ns", "t1", spec=b"{}", runtime="io.containerd.nope.v1")
    assert not (tmp_path / "state" / "ns" / "t1").exists()
    assert not m.exists("ns", "t1")


async def test_a_shim_whose_start_fails_reports_its_output(tmp_path: Path) -> None:
    bad = tmp_path / "bin" / "containerd-shim-bad-v1"
    bad.parent.mkdir()
    bad.write_text("#!/bin/sh\necho 'cannot do it' >&2\nexit 4\n")
    bad.chmod(0o755)
    m = make_manager(tmp_path, env=lambda: {"PATH": str(bad.parent)})
    with pytest.raises(UnknownError) as excinfo:
        await m.create("ns", "t1", spec=b"{}", runtime="io.containerd.bad.v1")
    assert str(excinfo.value) == (
        "failed to start shim: start failed: cannot do it: exit status 4: unknown"
    )
    assert not (tmp_path / "state" / "ns" / "t1").exists()


async def test_restore_removes_empty_and_orphan_dirs(tmp_path: Path) -> None:
    (tmp_path / "state" / "ns" / "empty").mkdir(parents=True)
    (tmp_path / "root" / "ns" / "orphan").mkdir(parents=True)

    async def gone(_ns: str, _cid: str) -> str:
        return ""

    b = Bundle.create(tmp_path / "state", tmp_path / "root", "ns", "nocontainer", b"{}")
    m = make_manager(tmp_path, env=lambda: {"PATH": ""}, container_runtime=gone)
    await m.start()
    try:
        assert not (tmp_path / "state" / "ns" / "empty").exists()
        assert not (tmp_path / "root" / "ns" / "orphan").exists()
        assert not b.path.exists()
        assert m.tasks() == []
    finally:
        await m.aclose()


async def test_restore_cleans_up_a_dead_shim_and_announces_its_exit_once(
    tmp_path: Path,
) -> None:
    """A bundle whose shim is gone: ``<shim> delete`` runs, exit + delete are published."""
    shim = tmp_path / "bin" / "containerd-shim-fake-v1"
    shim.parent.mkdir()
    # ``delete`` prints a DeleteResponse{pid: 42, exit_status: 137} (hand-encoded).
    shim.write_text("#!/bin/sh\nprintf '\\010\\052\\020\\211\\001'\n")
    shim.chmod(0o755)
    exchange = Exchange()
    m = TaskManager(
        state_dir=tmp_path / "state",
        root_dir=tmp_path / "root",
        grpc_address=str(tmp_path / "c.sock"),
        ttrpc_address=str(tmp_path / "c.sock.ttrpc"),
        events=exchange,
        env=lambda: {"PATH": ""},
    )
    dead = Bundle.create(tmp_path / "state", tmp_path / "root", "ns", "dead", b"{}")
    dead.write("shim-binary-path", str(shim))
    dead.write("address", f"unix://{tmp_path}/no.sock")
    done = Bundle.create(tmp_path / "state", tmp_path / "root", "ns", "done", b"{}")
    done.write("shim-binary-path", str(shim))
    done.mark_exit_published()
    sub = exchange.subscribe()
    await m.start()
    await m.aclose()
    seen = []
    while True:
        try:
            env = await asyncio.wait_for(sub.__anext__(), 0.2)
        except TimeoutError:
            break
        ev = task_pb2.TaskExit() if env.topic == "/tasks/exit" else task_pb2.TaskDelete()
        ev.ParseFromString(env.event.value)
        seen.append((env.namespace, env.topic, ev.container_id, ev.pid, ev.exit_status))

    # "dead" gets exit + delete; "done" (its exit went out before) only delete.
    assert seen == [
        ("ns", "/tasks/exit", "dead", 42, 137),
        ("ns", "/tasks/delete", "dead", 42, 137),
        ("ns", "/tasks/delete", "done", 42, 137),
    ]
    assert not dead.path.exists()
    assert not done.path.exists()


def test_plugin_registers_manager_and_service_with_default_shims() -> None:
    regs = {r.uri: r for r in plugin.pycontainerd_plugins()}
    runtime = regs["io.containerd.runtime.v2.task"]
    assert runtime.type is PluginType.RUNTIME
    assert runtime.config["shims"] == {"io.containerd.runc.v2": "containerd-shim-pyrunc-v2"}
    assert PluginType.EVENT in runtime.requires
    assert PluginType.METADATA in runtime.requires
    assert regs["io.containerd.grpc.v1.tasks"].requires[0] is PluginType.RUNTIME
