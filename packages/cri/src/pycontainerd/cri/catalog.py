"""The CRI's view of the images of namespace ``k8s.io``.

The CRI identifies an image by its config digest: every image record (a
name) whose target leads to the same config is one CRI image, listed with
its ``repo_tags`` (``name:tag`` records) and ``repo_digests``
(``name@<target digest>``, also derived from tag records as containerd's CRI
does). ``size`` is the sum of the manifest's, the config's and the layers'
blob sizes. The image's ``User`` gives ``uid`` (numeric) or ``username``.

Importing this module must not import grpc.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError
from pycontainerd.core.namespaces import with_namespace
from pycontainerd.cri.images import INDEX_TYPES, normalize, read_blob

if TYPE_CHECKING:
    from pathlib import Path

    from pycontainerd.core.images import Image
    from pycontainerd.metadata.metadata import Metadata

K8S_NAMESPACE = "k8s.io"
PINNED_LABEL = "io.cri-containerd.pinned"
"""The label of images the kubelet's image GC must keep (the sandbox image), as containerd 1.7."""
PINNED = "pinned"


@dataclass(slots=True)
class CriImage:
    """One image as the CRI lists it."""

    id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    size: int = 0
    user: str = ""
    config: dict[str, object] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    pinned: bool = False

    @property
    def uid(self) -> int | None:
        """The numeric user of the image config, if it is numeric."""
        user = self.user.partition(":")[0]
        return int(user) if user.isdigit() else None

    @property
    def username(self) -> str:
        user = self.user.partition(":")[0]
        return "" if not user or user.isdigit() else user


class ImageCatalog:
    """Lists, finds and removes CRI images in namespace ``k8s.io``."""

    def __init__(self, md: Metadata) -> None:
        self.md = md

    async def _resolve(self, image: Image) -> tuple[str, str, int, dict[str, object]]:
        """(config digest, manifest digest, size, config) of an image record."""
        store = self.md.content_store()
        target = image.target
        data = json.loads(await read_blob(store, target.digest))
        manifest_digest, manifest_size = target.digest, target.size
        if target.media_type in INDEX_TYPES or "manifests" in data:
            for m in data.get("manifests", []):
                p = m.get("platform") or {}
                if not p or (p.get("os"), p.get("architecture")) == ("linux", "amd64"):
                    manifest_digest, manifest_size = m["digest"], int(m.get("size", 0))
                    data = json.loads(await read_blob(store, manifest_digest))
                    break
            else:
                msg = f"no linux/amd64 manifest in {target.digest}"
                raise NotFoundError(msg)
        config_desc = data["config"]
        config = json.loads(await read_blob(store, config_desc["digest"]))
        size = manifest_size + int(config_desc.get("size", 0))
        size += sum(int(layer.get("size", 0)) for layer in data.get("layers", []))
        return str(config_desc["digest"]), str(manifest_digest), size, config

    async def list(self) -> list[CriImage]:
        """Every image whose content is complete, by id (config digest)."""
        by_id: dict[str, CriImage] = {}
        with with_namespace(K8S_NAMESPACE):
            records = await self.md.image_store().list()
            for record in records:
                try:
                    config_id, _manifest, size, config = await self._resolve(record)
                except (NotFoundError, ValueError, KeyError):
                    continue
                img = by_id.setdefault(config_id, CriImage(id=config_id, size=size))
                img.names.append(record.name)
                img.pinned = img.pinned or record.labels.get(PINNED_LABEL) == PINNED
                cfg = config.get("config")
                img.user = str(cfg.get("User") or "") if isinstance(cfg, dict) else ""
                img.config = config
                name = record.name
                if name.startswith("sha256:"):
                    continue
                repo, _, digest = name.partition("@")
                if digest:
                    _add(img.repo_digests, name)
                    continue
                _add(img.repo_tags, name)
                # its own target, as containerd's CRI (for a multi-platform image: the index)
                _add(img.repo_digests, f"{repo.rpartition(':')[0] or repo}@{record.target.digest}")
        return sorted(by_id.values(), key=lambda i: i.id)

    async def find(self, ref: str) -> CriImage | None:
        """The image ``ref`` names: an id (or its hex), a tag or a digest reference."""
        if not ref:
            return None
        images = await self.list()
        for img in images:
            if ref in (img.id, img.id.removeprefix("sha256:")):
                return img
        try:
            full = normalize(ref)
        except InvalidArgumentError:
            return None
        for img in images:
            if full in img.repo_tags or full in img.repo_digests or full in img.names:
                return img
        return None

    async def remove(self, ref: str) -> bool:
        """Remove every record of the image ``ref`` names; False when there is none."""
        img = await self.find(ref)
        if img is None:
            return False
        with with_namespace(K8S_NAMESPACE):
            for name in img.names:
                with contextlib.suppress(NotFoundError):
                    await self.md.image_store().delete(name)
        return True


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes, inodes) used under ``root``, counting each inode once (``du``-like)."""
    seen: set[tuple[int, int]] = set()
    used = 0
    for directory, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            used += st.st_blocks * 512
    return used, len(seen)


def _add(items: list[str], value: str) -> None:
    if value not in items:
        items.append(value)
