"""Image references and the parts of an image the CRI needs (config, chain id).

Importing this module must not import grpc.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pycontainerd.core.errdefs import InvalidArgumentError, NotFoundError

if TYPE_CHECKING:
    from pycontainerd.core.content import Provider

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
DEFAULT_DOMAIN = "docker.io"


def normalize(ref: str) -> str:
    """A reference in containerd's full form: ``busybox`` -> ``docker.io/library/busybox:latest``.

    Raises:
        InvalidArgumentError: an empty reference.
    """
    if not ref:
        msg = "image reference must not be empty"
        raise InvalidArgumentError(msg)
    name, _, digest = ref.partition("@")
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = DEFAULT_DOMAIN, name
    else:
        domain, path = first, rest
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    last = path.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        path += ":latest"
    full = f"{domain}/{path}"
    return f"{full}@{digest}" if digest else full


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the runtime takes from an image: its layers' chain id and process defaults."""

    chain_id: str
    config_digest: str
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    user: str = ""
    working_dir: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def chain_id(diff_ids: list[str]) -> str:
    """The OCI chain id of a list of layer diff ids."""
    if not diff_ids:
        return ""
    current = diff_ids[0]
    for diff in diff_ids[1:]:
        current = "sha256:" + hashlib.sha256(f"{current} {diff}".encode()).hexdigest()
    return current


async def read_blob(provider: Provider, digest: str) -> bytes:
    """The whole blob ``digest``."""
    reader = await provider.reader_at(digest)
    try:
        return await reader.read_at(0, reader.size)
    finally:
        await reader.close()


async def image_config(
    provider: Provider, media_type: str, digest: str, platform: tuple[str, str] = ("linux", "amd64")
) -> ImageConfig:
    """Follow an image's target (index or manifest) to its config.

    Raises:
        NotFoundError: a blob is missing or no manifest matches the platform.
    """
    data = json.loads(await read_blob(provider, digest))
    if media_type in INDEX_TYPES or "manifests" in data:
        for m in data.get("manifests", []):
            p = m.get("platform") or {}
            if (p.get("os"), p.get("architecture")) == platform or not p:
                data = json.loads(await read_blob(provider, m["digest"]))
                break
        else:
            msg = f"no manifest for platform {'/'.join(platform)} in {digest}"
            raise NotFoundError(msg)
    config_digest = data["config"]["digest"]
    cfg = json.loads(await read_blob(provider, config_digest))
    proc = cfg.get("config") or {}
    return ImageConfig(
        chain_id=chain_id(list((cfg.get("rootfs") or {}).get("diff_ids") or [])),
        config_digest=config_digest,
        entrypoint=tuple(proc.get("Entrypoint") or ()),
        cmd=tuple(proc.get("Cmd") or ()),
        env=tuple(proc.get("Env") or ()),
        user=str(proc.get("User") or ""),
        working_dir=str(proc.get("WorkingDir") or ""),
        raw=cfg,
    )
