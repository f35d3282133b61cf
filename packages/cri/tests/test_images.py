"""ListImages, ImageStatus and RemoveImage over the images of namespace ``k8s.io``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pycontainerd.api.cri.v1 import api_pb2 as pb
from pycontainerd.cri import testing

if TYPE_CHECKING:
    from pycontainerd.cri.testing import Cri

pytestmark = [pytest.mark.system]


def _status(cri: Cri, ref: str) -> pb.ImageStatusResponse:
    resp: pb.ImageStatusResponse = cri.images.ImageStatus(
        pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=True)
    )
    return resp


def test_list_status_and_remove(cri_without_cni: Cri) -> None:
    cri = cri_without_cni
    (img,) = cri.images.ListImages(pb.ListImagesRequest()).images
    assert img.id.startswith("sha256:")
    assert list(img.repo_tags) == [testing.PAUSE_REF]
    repo = testing.PAUSE_REF.rpartition(":")[0]
    assert list(img.repo_digests) == [f"{repo}@{cri.pause_digest}"]
    assert img.uid.value == 65535
    assert img.username == ""
    assert img.size > 1000  # the busybox layer

    # The same image by tag, by id, by its hex alone and by digest reference.
    for ref in (testing.PAUSE_REF, img.id, img.id.removeprefix("sha256:"), img.repo_digests[0]):
        st = _status(cri, ref)
        assert st.image.id == img.id, ref
    assert '"User": "65535:65535"' in _status(cri, img.id).info["info"]
    assert not _status(cri, "docker.io/library/nothere:1").HasField("image")
    filtered = pb.ListImagesRequest(filter=pb.ImageFilter(image=pb.ImageSpec(image=img.id)))
    assert [i.id for i in cri.images.ListImages(filtered).images] == [img.id]

    for _ in range(2):  # removal is idempotent
        cri.images.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=testing.PAUSE_REF)))
    assert list(cri.images.ListImages(pb.ListImagesRequest()).images) == []
    assert testing.PAUSE_REF not in cri.daemon.ctr("-n", "k8s.io", "images", "ls", "-q").stdout


def test_image_fs_info_reports_the_snapshotter_directory(cri_without_cni: Cri) -> None:
    cri = cri_without_cni
    resp = cri.images.ImageFsInfo(pb.ImageFsInfoRequest())
    (fs,) = resp.image_filesystems
    assert fs.fs_id.mountpoint == str(cri.daemon.root / "io.containerd.snapshotter.v1.overlayfs")
    assert fs.used_bytes.value > 1_000_000  # at least the unpacked static busybox
    assert fs.inodes_used.value > 5
    assert fs.timestamp > 0
