"""PullImage against docker-registry on 127.0.0.1, and RunPodSandbox pulling its image."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING

import grpc
import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.cri import testing
from pycontainerd.cri.images import normalize
from pycontainerd.cri.pull import credentials

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]


def _pull(cri: Cri, ref: str, auth: pb.AuthConfig | None = None) -> str:
    resp = cri.images.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref), auth=auth))
    return str(resp.image_ref)


def _error(cri: Cri, ref: str, auth: pb.AuthConfig | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        _pull(cri, ref, auth)
    return info.value


def test_references_and_auth_configs_are_read_like_containerd() -> None:
    assert normalize("busybox") == "docker.io/library/busybox:latest"
    assert normalize("k8s.gcr.io/pause:3.6") == "k8s.gcr.io/pause:3.6"
    assert normalize("127.0.0.1:5000/app") == "127.0.0.1:5000/app:latest"
    assert credentials() is None
    assert credentials("alice", "pw", base64.b64encode(b"x:y").decode()) == ("alice", "pw")
    assert credentials(auth=base64.b64encode(b"bob:s:cret").decode()) == ("bob", "s:cret")
    with pytest.raises(InvalidArgumentError, match="auth"):
        credentials(auth="not base64!")


def _seed(cri: Cri, repo: str, tag: str) -> tuple[str, str, str]:
    """The pause image in the fixture's registry as ``repo:tag`` (see ``seed_pause``)."""
    assert cri.registry is not None
    busybox = testing.static_busybox()
    assert busybox is not None
    return testing.seed_pause(cri.registry, busybox, repo, tag)


def test_pull_then_list_status_and_ctr_see_the_managed_image(cri_registry: Cri) -> None:
    cri = cri_registry
    ref, manifest, config = _seed(cri, "team/app", "v1")
    repo = ref.rpartition(":")[0]

    assert _pull(cri, ref) == config
    assert _pull(cri, ref) == config  # again: the same image, no duplicate names

    (img,) = cri.images.ListImages(pb.ListImagesRequest()).images
    assert img.id == config
    assert list(img.repo_tags) == [ref]
    assert list(img.repo_digests) == [f"{repo}@{manifest}"]
    assert img.uid.value == 65535
    assert not img.pinned  # only the sandbox image is pinned
    for name in (ref, config, f"{repo}@{manifest}"):
        st = cri.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=name)))
        assert st.image.id == config, name

    # containerd's CRI records: the tag, the id and the repo digest, all labelled managed
    listed = cri.daemon.ctr("-n", "k8s.io", "images", "ls").stdout
    for name in (ref, config, f"{repo}@{manifest}"):
        line = next(x for x in listed.splitlines() if x.startswith(name + " "))
        assert "io.cri-containerd.image=managed" in line, line
    # unpacked for the configured snapshotter
    snapshots = cri.daemon.ctr("-n", "k8s.io", "snapshots", "--snapshotter", "overlayfs", "ls")
    assert "sha256:" in snapshots.stdout


def test_a_mirror_from_the_cri_config_serves_its_registry(cri_registry: Cri) -> None:
    cri = cri_registry
    _, manifest, config = _seed(cri, "team/mirrored", "2")
    ref = f"{testing.MIRRORED}/team/mirrored:2"  # the name resolves nowhere: only the mirror has it
    assert _pull(cri, ref) == config
    (img,) = cri.images.ListImages(pb.ListImagesRequest()).images
    assert list(img.repo_tags) == [ref]
    assert list(img.repo_digests) == [f"{testing.MIRRORED}/team/mirrored@{manifest}"]


def test_a_missing_image_is_not_found(cri_registry: Cri) -> None:
    cri = cri_registry
    assert cri.registry is not None
    ref = f"{cri.registry.host}/nothere:1"
    err = _error(cri, ref)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # containerd's text, word for word
    assert err.details() == (
        f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
        f"{ref}: not found"
    )
    assert not cri.images.ListImages(pb.ListImagesRequest()).images
    assert _error(cri, "").code() == grpc.StatusCode.INVALID_ARGUMENT


def test_pull_with_auth_from_the_auth_config(cri_registry: Cri, tmp_path: Path) -> None:
    rt = pytest.importorskip("pycontainerd.remotes.testing")
    cri = cri_registry
    busybox = testing.static_busybox()
    assert busybox is not None
    with rt.Registry(tmp_path / "auth", htpasswd={"alice": "s3cret"}).running() as reg:
        ref, _, config = testing.seed_pause(reg, busybox, "private", "1", ("alice", "s3cret"))

        err = _error(cri, ref)  # anonymous
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
        err = _error(cri, ref, pb.AuthConfig(username="alice", password="wrong"))
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()
        assert f'failed to pull and unpack image "{ref}"' in (err.details() or "")
        assert not cri.images.ListImages(pb.ListImagesRequest()).images

        assert _pull(cri, ref, pb.AuthConfig(username="alice", password="s3cret")) == config
        cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=config)))
        encoded = base64.b64encode(b"alice:s3cret").decode()
        assert _pull(cri, ref, pb.AuthConfig(auth=encoded)) == config
        st = cri.images.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)))
        assert st.image.id == config


def test_credentials_and_ca_from_registry_configs(cri_registry_configs: Cri) -> None:
    rt = pytest.importorskip("pycontainerd.remotes.testing")
    cri = cri_registry_configs
    reg = cri.extra
    assert isinstance(reg, rt.Registry)
    busybox = testing.static_busybox()
    assert busybox is not None
    ref, _, config = testing.seed_pause(reg, busybox, "private", "2", ("alice", "s3cret"))
    # no AuthConfig: registry.configs.<host>.auth answers the challenge, .tls.ca_file
    # verifies the server's certificate
    assert _pull(cri, ref) == config
    cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=config)))
    # the request's credentials win over the configured ones
    err = _error(cri, ref, pb.AuthConfig(username="alice", password="wrong"))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err.details()


def test_run_pod_sandbox_pulls_a_missing_sandbox_image(cri_registry: Cri) -> None:
    cri = cri_registry
    assert not cri.images.ListImages(pb.ListImagesRequest()).images
    config = cri.pod_config("pulled")
    config.linux.security_context.namespace_options.network = pb.NODE
    sid = cri.run(config)
    assert cri.status(sid).status.state == pb.SANDBOX_READY
    (img,) = cri.images.ListImages(pb.ListImagesRequest()).images
    assert list(img.repo_digests) == [
        f"{cri.registry.host if cri.registry else ''}/pause@{cri.pause_digest}"
    ]
    # the sandbox image is pinned (the kubelet's image GC keeps it), as containerd 1.7
    assert img.pinned
    listed = cri.daemon.ctr("-n", "k8s.io", "images", "ls").stdout
    assert "io.cri-containerd.pinned=pinned" in listed


def test_a_pull_without_progress_is_cancelled(cri_stalling_registry: Cri) -> None:
    # image_pull_progress_timeout = "1s"; the registry stops sending mid-blob
    # and keeps the connection open (the resolver's own read timeout is 30 s).
    cri = cri_stalling_registry
    registry = cri.extra
    assert isinstance(registry, testing.StallingRegistry)
    with pytest.raises(grpc.RpcError) as info:
        cri.images.PullImage(
            pb.PullImageRequest(image=pb.ImageSpec(image=registry.ref)), timeout=25
        )
    err = info.value
    assert registry.stalled.is_set()
    assert err.code() == grpc.StatusCode.CANCELLED, err.details()
    assert (err.details() or "").startswith(f'failed to pull and unpack image "{registry.ref}": ')
    assert "no progress in 1s" in (err.details() or "")
    images = cri.images.ListImages(pb.ListImagesRequest()).images
    assert not [i for i in images if registry.ref in i.repo_tags]
