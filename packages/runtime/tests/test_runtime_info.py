"""Runtime info: our shim's ``-info`` protocol, and ``PluginInfo`` through our daemon."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import grpc
import pytest
from google.protobuf import any_pb2

from pycontainerd.api.services.introspection.v1 import introspection_pb2 as ipb
from pycontainerd.api.services.introspection.v1 import introspection_pb2_grpc as igrpc
from pycontainerd.api.types import introspection_pb2
from pycontainerd.api.types.runc.options import oci_pb2
from pycontainerd.runtime.shim.info import FEATURES_URL
from pycontainerd.runtime.testing import DAEMON_MODULES, install_shim, require


def _runc_options(**fields: object) -> any_pb2.Any:
    return any_pb2.Any(
        type_url="containerd.runc.v1.Options",
        value=oci_pb2.Options(**fields).SerializeToString(),  # type: ignore[arg-type]
    )


def _info(shim: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(shim), "-info"], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_shim_info_protocol(tmp_path: Path) -> None:
    require("runc")
    shim = install_shim(tmp_path)
    res = _info(shim, b"")
    assert res.returncode == 0, res.stderr
    info = introspection_pb2.RuntimeInfo()
    info.ParseFromString(res.stdout)
    assert info.name == "io.containerd.pyrunc.v2"
    assert info.version.version
    assert not info.HasField("options")
    assert info.features.type_url == FEATURES_URL
    features = json.loads(info.features.value)
    assert features["ociVersionMin"].startswith("1.")
    # runc options are echoed back; binary_name picks the runtime binary.
    opts = _runc_options(binary_name="runc", root="/run/x")
    res = _info(shim, opts.SerializeToString())
    assert res.returncode == 0, res.stderr
    info.ParseFromString(res.stdout)
    assert info.options == opts
    # Bad input: options of another type, a binary that does not exist.
    other = any_pb2.Any(type_url="example.com/Other", value=b"")
    res = _info(shim, other.SerializeToString())
    assert res.returncode == 1
    assert b"invalid type example.com/Other" in res.stderr
    res = _info(shim, _runc_options(binary_name="no-such-runc").SerializeToString())
    assert res.returncode == 1
    assert b'failed to look up the path of "no-such-runc"' in res.stderr


@pytest.mark.system
def test_plugin_info_through_the_daemon() -> None:
    testing = pytest.importorskip("pycontainerd.daemon.testing")
    require("runc")
    base = Path(tempfile.mkdtemp(dir="/tmp", prefix="ri-"))
    d = testing.Daemon(base, config="version = 2\n", env=testing.daemon_env(DAEMON_MODULES))
    try:
        d.start()
        with grpc.insecure_channel(f"unix://{d.address}") as channel:
            stub = igrpc.IntrospectionStub(channel)

            def plugin_info(
                runtime: str, options: any_pb2.Any | None = None
            ) -> ipb.PluginInfoResponse:
                req = introspection_pb2.RuntimeRequest(runtime_path=runtime)
                if options is not None:
                    req.options.CopyFrom(options)
                packed = any_pb2.Any(
                    type_url="containerd.types.RuntimeRequest", value=req.SerializeToString()
                )
                resp: ipb.PluginInfoResponse = stub.PluginInfo(
                    ipb.PluginInfoRequest(
                        type="io.containerd.runtime.v2", id="task", options=packed
                    )
                )
                return resp

            resp = plugin_info("io.containerd.runc.v2", _runc_options(binary_name="runc"))
            assert (resp.plugin.type, resp.plugin.id) == ("io.containerd.runtime.v2", "task")
            assert resp.extra.type_url == "containerd.types.RuntimeInfo"
            info = introspection_pb2.RuntimeInfo()
            info.ParseFromString(resp.extra.value)
            assert info.name == "io.containerd.pyrunc.v2"
            assert info.version.version
            assert info.options.type_url == "containerd.runc.v1.Options"
            assert json.loads(info.features.value)["ociVersionMax"]

            # Without options: only the plugin.
            plain = stub.PluginInfo(
                ipb.PluginInfoRequest(type="io.containerd.runtime.v2", id="task")
            )
            assert plain.plugin.id == "task"
            assert not plain.HasField("extra")
            with pytest.raises(grpc.RpcError) as err:
                plugin_info("io.containerd.nosuch.v1")
            assert err.value.code() == grpc.StatusCode.UNKNOWN
            assert "failed to resolve runtime path" in (err.value.details() or "")
            with pytest.raises(grpc.RpcError) as err:
                stub.PluginInfo(ipb.PluginInfoRequest(type="io.containerd.runtime.v2", id="nope"))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.RpcError) as err:
                stub.PluginInfo(
                    ipb.PluginInfoRequest(
                        type="io.containerd.runtime.v2",
                        id="task",
                        options=any_pb2.Any(type_url="example.com/Other"),
                    )
                )
            assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        d.kill()
        shutil.rmtree(base, ignore_errors=True)
