"""Media types of images and what a pull does with each.

Both OCI and Docker schema 2 types are known. ``ref_key`` names the ingest a
blob is written under, the way containerd's ``remotes.MakeRefKey`` does
(``manifest-sha256:...``), so concurrent pulls of the same blob share one
ingest; ``child_label_prefix`` gives the ``containerd.io/gc.ref.content.*``
label a parent carries for each child.
"""

from __future__ import annotations

from typing import Final

from pycontainerd.core.errdefs import UnimplementedError

DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD: Final = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_LAYER: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"

OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

INDEXES: Final = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFESTS: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIGS: Final = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYERS: Final = frozenset(
    {
        DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD, DOCKER_FOREIGN_LAYER,
        OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_ND, OCI_LAYER_ND_GZIP,
        OCI_LAYER_ND_ZSTD,
    }
)  # fmt: skip

#: What the manifests endpoint is asked to return (``Accept``).
MANIFEST_ACCEPT: Final = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX, "*/*")

#: Upper bound on the size of a manifest or index read into memory.
MAX_MANIFEST_SIZE: Final = 4 << 20

UNCOMPRESSED_LABEL: Final = "containerd.io/uncompressed"
SOURCE_LABEL_PREFIX: Final = "containerd.io/distribution.source."
GC_CONTENT_PREFIX: Final = "containerd.io/gc.ref.content."
GC_SNAPSHOT_PREFIX: Final = "containerd.io/gc.ref.snapshot."


def base(media_type: str) -> str:
    """``media_type`` without parameters (``; charset=...``), lower-cased."""
    return media_type.split(";", 1)[0].strip().lower()


def is_index(media_type: str) -> bool:
    """An OCI index or a Docker manifest list."""
    return base(media_type) in INDEXES


def is_manifest(media_type: str) -> bool:
    """An OCI or Docker schema 2 image manifest."""
    return base(media_type) in MANIFESTS


def is_config(media_type: str) -> bool:
    """An image configuration."""
    return base(media_type) in CONFIGS


def is_layer(media_type: str) -> bool:
    """A filesystem layer (any compression)."""
    mt = base(media_type)
    return mt in LAYERS or mt.startswith(("application/vnd.oci.image.layer.", DOCKER_LAYER))


def is_known_root(media_type: str) -> bool:
    """Whether a pull can start from a descriptor of this type."""
    return is_index(media_type) or is_manifest(media_type)


def check_root(media_type: str, ref: str) -> None:
    """Refuse a root descriptor a pull cannot walk.

    Raises:
        UnimplementedError: schema 1 or an unknown media type.
    """
    if is_known_root(media_type):
        return
    if base(media_type) == DOCKER_SCHEMA1:
        msg = f"{ref}: Docker schema 1 manifests are not supported"
    else:
        msg = f"{ref}: unsupported media type {media_type!r} for an image root"
    raise UnimplementedError(msg)


def ref_key(media_type: str, dgst: str) -> str:
    """The ingest ref for a blob: ``<kind>-<digest>`` (containerd's ``MakeRefKey``)."""
    if is_manifest(media_type):
        kind = "manifest"
    elif is_index(media_type):
        kind = "index"
    elif is_layer(media_type):
        kind = "layer"
    elif is_config(media_type):
        kind = "config"
    elif "in-toto" in media_type:
        kind = "attestation"
    else:
        kind = "unknown"
    return f"{kind}-{dgst}"


def child_label_prefix(media_type: str) -> str:
    """The gc label prefix for a child of this type: ``m.``, ``config``, ``l.`` or ``""``."""
    if is_manifest(media_type) or is_index(media_type):
        return GC_CONTENT_PREFIX + "m."
    if is_config(media_type):
        return GC_CONTENT_PREFIX + "config"
    if is_layer(media_type):
        return GC_CONTENT_PREFIX + "l."
    return GC_CONTENT_PREFIX


def compression(media_type: str) -> str:
    """``gzip``, ``zstd`` or ``""`` (plain tar) for a layer.

    Raises:
        UnimplementedError: not a layer media type.
    """
    mt = base(media_type)
    if not is_layer(mt):
        msg = f"unsupported layer media type {media_type!r}"
        raise UnimplementedError(msg)
    if mt.endswith(("gzip", "+gzip")):
        return "gzip"
    if mt.endswith(("zstd", "+zstd")):
        return "zstd"
    return ""
