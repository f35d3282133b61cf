"""The committed generated code: imports, service names, wire paths, drift."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from types import ModuleType

REPO = Path(__file__).resolve().parents[3]
GEN_TOOL = REPO / "tools" / "gen_protos.py"

# Reference §0.2 (gRPC API v1, 1.7+ additions included), the daemon's ttrpc
# service and the shim APIs.
EXPECTED_SERVICES = {
    "containerd.services.content.v1.Content",
    "containerd.services.images.v1.Images",
    "containerd.services.namespaces.v1.Namespaces",
    "containerd.services.containers.v1.Containers",
    "containerd.services.tasks.v1.Tasks",
    "containerd.services.snapshots.v1.Snapshots",
    "containerd.services.diff.v1.Diff",
    "containerd.services.leases.v1.Leases",
    "containerd.services.introspection.v1.Introspection",
    "containerd.services.events.v1.Events",
    "containerd.services.version.v1.Version",
    "containerd.services.transfer.v1.Transfer",
    "containerd.services.sandbox.v1.Store",
    "containerd.services.sandbox.v1.Controller",
    "containerd.services.streaming.v1.Streaming",
    "containerd.services.events.ttrpc.v1.Events",
    "containerd.task.v2.Task",
    "containerd.task.v3.Task",
    "containerd.runtime.sandbox.v1.Sandbox",
    "runtime.v1.RuntimeService",
    "runtime.v1.ImageService",
}


def _generated_modules() -> list[str]:
    root = importlib.import_module("pycontainerd.api")
    return sorted(
        info.name
        for info in pkgutil.walk_packages(root.__path__, prefix="pycontainerd.api.")
        if info.name.endswith(("_pb2", "_pb2_grpc"))
    )


GENERATED = _generated_modules()


def test_generated_modules_exist() -> None:
    # 41 .proto files of ours; gRPC modules only for the 17 with services.
    assert len([m for m in GENERATED if m.endswith("_pb2")]) >= 41
    assert len([m for m in GENERATED if m.endswith("_pb2_grpc")]) >= 17


@pytest.mark.parametrize("name", GENERATED)
def test_generated_module_imports(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__name__ == name


def test_message_only_files_have_no_grpc_module() -> None:
    names = set(GENERATED)
    for name in ("types.descriptor", "events.task", "types.task.task"):
        assert f"pycontainerd.api.{name}_pb2" in names
        assert f"pycontainerd.api.{name}_pb2_grpc" not in names


def _service_names() -> set[str]:
    found: set[str] = set()
    for name in GENERATED:
        if name.endswith("_pb2"):
            module = importlib.import_module(name)
            found.update(svc.full_name for svc in module.DESCRIPTOR.services_by_name.values())
    return found


def test_service_full_names() -> None:
    assert _service_names() == EXPECTED_SERVICES


def test_health_service_comes_from_grpcio_health_checking() -> None:
    from grpc_health.v1 import health_pb2  # type: ignore[import-untyped]

    assert "grpc.health.v1.Health" in {
        svc.full_name for svc in health_pb2.DESCRIPTOR.services_by_name.values()
    }


class _RecordingServer:
    """Stands in for grpc.Server to see what a servicer registers."""

    def __init__(self) -> None:
        self.methods: dict[str, set[str]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        for handler in handlers:
            name = handler.service_name()
            self.methods.setdefault(name, set())

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.methods.setdefault(service, set()).update(handlers)


def test_servicers_register_upstream_paths() -> None:
    server = _RecordingServer()
    for name in GENERATED:
        if not name.endswith("_pb2_grpc"):
            continue
        module = importlib.import_module(name)
        for attr in dir(module):
            if attr.startswith("add_") and attr.endswith("Servicer_to_server"):
                servicer = getattr(module, attr.removeprefix("add_").removesuffix("_to_server"))
                getattr(module, attr)(servicer(), server)
    assert set(server.methods) == EXPECTED_SERVICES
    assert "Write" in server.methods["containerd.services.content.v1.Content"]
    assert "Forward" in server.methods["containerd.services.events.ttrpc.v1.Events"]
    assert len(server.methods["containerd.task.v2.Task"]) == 17


async def test_version_round_trip_over_a_unix_socket() -> None:
    import grpc
    from google.protobuf import empty_pb2

    from pycontainerd.api.services.version.v1 import version_pb2, version_pb2_grpc

    class Version(version_pb2_grpc.VersionServicer):
        async def Version(  # noqa: N802 - gRPC method name
            self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
        ) -> version_pb2.VersionResponse:
            return version_pb2.VersionResponse(version="v9.9.9", revision="abc")

    sock_dir = tempfile.mkdtemp(dir="/tmp", prefix="pcd-api-")
    address = f"unix://{sock_dir}/grpc.sock"
    server = grpc.aio.server()
    version_pb2_grpc.add_VersionServicer_to_server(Version(), server)
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            # A raw call on the upstream path proves what goes on the wire.
            raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                "/containerd.services.version.v1.Version/Version"
            )
            reply = await raw(b"")
            assert version_pb2.VersionResponse.FromString(reply).version == "v9.9.9"
            typed = await version_pb2_grpc.VersionStub(channel).Version(empty_pb2.Empty())
            assert (typed.version, typed.revision) == ("v9.9.9", "abc")
    finally:
        await server.stop(None)
        shutil.rmtree(sock_dir, ignore_errors=True)


def test_gen_protos_check_passes() -> None:
    # The CI drift check: committed generated code equals a fresh generation.
    proc = subprocess.run(
        [sys.executable, str(GEN_TOOL), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos_under_test", GEN_TOOL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def drifted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, Path]:
    """gen_protos writing to a copy of the generated tree, one file edited and one stale.

    Returns the tool and the copy's ``pycontainerd/api`` directory.
    """
    tool = _load_tool()
    out = tmp_path / "src"
    shutil.copytree(tool.OUT_ROOT, out)
    api = out / "pycontainerd" / "api"
    (api / "types" / "mount_pb2.py").write_text("# edited by hand\n")
    (api / "types" / "gone_pb2.py").write_text("")
    monkeypatch.setattr(tool, "OUT_ROOT", out)
    return tool, api


def test_gen_protos_check_reports_drift(drifted: tuple[ModuleType, Path]) -> None:
    tool, api = drifted
    (api / "types" / "platform_pb2.pyi").unlink()

    problems = tool.check()

    assert f"differs: {api / 'types' / 'mount_pb2.py'}" in problems
    assert f"missing: {api / 'types' / 'platform_pb2.pyi'}" in problems
    assert f"stale: {api / 'types' / 'gone_pb2.py'}" in problems
    assert len(problems) == 3
    assert tool.main(["--check"]) == 1


def test_gen_protos_write_repairs_drift(drifted: tuple[ModuleType, Path]) -> None:
    tool, api = drifted

    changed = tool.write()

    assert f"wrote: {api / 'types' / 'mount_pb2.py'}" in changed
    assert f"removed: {api / 'types' / 'gone_pb2.py'}" in changed
    assert tool.check() == []
