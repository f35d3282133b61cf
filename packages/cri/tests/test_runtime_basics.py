"""Version, Status, RuntimeConfig and the UNIMPLEMENTED answers, through the generated stubs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb

if TYPE_CHECKING:
    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]


def _conditions(resp: pb.StatusResponse) -> dict[str, pb.RuntimeCondition]:
    return {c.type: c for c in resp.status.conditions}


def test_version(cri_without_cni: Cri) -> None:
    v = cri_without_cni.runtime.Version(pb.VersionRequest(version="v1"))
    assert v.runtime_api_version == "v1"
    assert v.runtime_name == "containerd"
    assert v.version == "0.1.0"
    assert v.runtime_version


def test_status_with_a_cni_config(cri: Cri) -> None:
    resp = cri.runtime.Status(pb.StatusRequest(verbose=True))
    conds = _conditions(resp)
    assert conds["RuntimeReady"].status is True
    assert conds["NetworkReady"].status is True
    assert conds["NetworkReady"].reason == ""
    assert "pycri-" in resp.info["cniconfig"]
    assert [h.name for h in resp.runtime_handlers] == ["runc"]


def test_status_without_a_cni_config(cri_without_cni: Cri) -> None:
    resp = cri_without_cni.runtime.Status(pb.StatusRequest())
    net = _conditions(resp)["NetworkReady"]
    assert net.status is False
    assert net.reason == "NetworkPluginNotReady"
    assert "cni plugin not initialized" in net.message
    assert _conditions(resp)["RuntimeReady"].status is True
    assert resp.info == {}


def test_runtime_config_reports_the_cgroupfs_driver(cri_without_cni: Cri) -> None:
    resp = cri_without_cni.runtime.RuntimeConfig(pb.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == pb.CGROUPFS


def test_streaming_calls_check_their_target_exists(cri_without_cni: Cri) -> None:
    calls: list[tuple[Any, object, str]] = [
        (
            cri_without_cni.runtime.Exec,
            pb.ExecRequest(container_id="x", cmd=["sh"], stdout=True),
            'failed to find container "x" in store',
        ),
        (
            cri_without_cni.runtime.Attach,
            pb.AttachRequest(container_id="x", stdout=True),
            'failed to find container "x" in store',
        ),
        (
            cri_without_cni.runtime.PortForward,
            pb.PortForwardRequest(pod_sandbox_id="x"),
            'failed to find sandbox "x" in store',
        ),
    ]
    for call, request, text in calls:
        with pytest.raises(grpc.RpcError) as info:
            call(request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert text in (info.value.details() or "")


def test_methods_not_built_yet_are_unimplemented_with_their_name(cri_without_cni: Cri) -> None:
    with pytest.raises(grpc.RpcError) as info:
        cri_without_cni.runtime.CheckpointContainer(pb.CheckpointContainerRequest(container_id="x"))
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "RuntimeService.CheckpointContainer is not implemented" in (info.value.details() or "")


def test_an_unknown_runtime_handler_is_refused(cri_without_cni: Cri) -> None:
    request = pb.RunPodSandboxRequest(config=cri_without_cni.pod_config(), runtime_handler="kata")
    with pytest.raises(grpc.RpcError) as info:
        cri_without_cni.runtime.RunPodSandbox(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'failed to get sandbox runtime: no runtime for "kata" is configured' in (
        info.value.details() or ""
    )
