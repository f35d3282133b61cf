"""Image names in archives: Docker normalisation, OCI ``ref.name`` and the import translators.

Archives name images in two ways. ``docker save`` writes familiar names
(``busybox:latest``) into ``manifest.json``; containerd stores them fully
qualified (``docker.io/library/busybox:latest``) and exports them familiar
again. An OCI layout names each ``index.json`` entry with the annotations
``io.containerd.image.name`` (the full name) and
``org.opencontainers.image.ref.name`` (by the OCI spec only the tag part,
e.g. ``latest``). On import ``ctr`` turns a bare tag into a full name with
``--base-name`` (or ``import-<date>``), and may add ``<base>@<digest>`` names.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Callable

IMAGE_NAME_ANNOTATION: Final = "io.containerd.image.name"
OCI_REF_NAME_ANNOTATION: Final = "org.opencontainers.image.ref.name"

DEFAULT_DOMAIN: Final = "docker.io"
_OFFICIAL_PREFIX: Final = "library/"

_COMPONENT: Final = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART: Final = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN: Final = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?")
_PATH: Final = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG: Final = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST: Final = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}")
_HEX64: Final = re.compile(r"[a-f0-9]{64}")


def _split(ref: str) -> tuple[str, str, str, str]:
    """``(domain, path, tag, digest)`` of a Docker reference, normalised.

    Raises:
        InvalidArgumentError: not a valid reference.
    """
    bad = f"invalid reference format: {ref!r}"
    if _HEX64.fullmatch(ref):
        msg = f"invalid repository name ({ref}), cannot specify 64-byte hexadecimal strings"
        raise InvalidArgumentError(msg)
    name, _, dgst = ref.partition("@")
    if dgst and not _DIGEST.fullmatch(dgst):
        raise InvalidArgumentError(bad)
    tag = ""
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidArgumentError(bad)
    first, slash, rest = name.partition("/")
    if not slash or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = DEFAULT_DOMAIN, name
        if first.lower() != first and slash:
            domain, path = first, rest
    else:
        domain, path = first, rest
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = _OFFICIAL_PREFIX + path
    if path.lower() != path:
        msg = f"invalid reference format: repository name must be lowercase: {ref!r}"
        raise InvalidArgumentError(msg)
    if not _DOMAIN.fullmatch(domain) or not _PATH.fullmatch(path) or len(domain) + len(path) > 254:
        raise InvalidArgumentError(bad)
    return domain, path, tag, dgst


def normalize(ref: str) -> str:
    """The full name containerd stores for a Docker name (``ParseDockerRef``).

    ``busybox`` → ``docker.io/library/busybox:latest``; a digest wins over a tag.

    Raises:
        InvalidArgumentError: not a valid reference.
    """
    domain, path, tag, dgst = _split(ref)
    out = f"{domain}/{path}"
    if dgst:
        return f"{out}@{dgst}"
    return f"{out}:{tag or 'latest'}"


def familiarize(ref: str) -> str:
    """The short name Docker shows (``docker.io/library/busybox:latest`` → ``busybox:latest``).

    Raises:
        InvalidArgumentError: not a valid reference.
    """
    domain, path, tag, dgst = _split(ref)
    if domain == DEFAULT_DOMAIN:
        if path.startswith(_OFFICIAL_PREFIX) and "/" not in path[len(_OFFICIAL_PREFIX) :]:
            path = path[len(_OFFICIAL_PREFIX) :]
        out = path
    else:
        out = f"{domain}/{path}"
    if tag:
        out += f":{tag}"
    if dgst:
        out += f"@{dgst}"
    if not tag and not dgst:
        out += ":latest"
    return out


def oci_ref_name(name: str) -> str:
    """The value of ``org.opencontainers.image.ref.name`` for ``name``.

    containerd puts the part after the repository there (``latest``,
    ``@sha256:…``); a name it cannot split into host and path is kept whole.
    """
    if "://" in name:
        return name
    host, _, path = name.partition("/")
    if not host or _bad_host(host):
        return name
    m = re.search(r"[:@]", path)
    if m is None:
        return ""
    obj = path[m.start() :]
    return obj[1:] if obj.startswith(":") else obj


def _bad_host(host: str) -> bool:
    """Whether Go's URL parser rejects ``host`` (a port that is not a number)."""
    if host.startswith("["):
        end = host.find("]")
        return end < 0 or (host[end + 1 :] not in ("",) and not host[end + 1 :].startswith(":"))
    _, colon, port = host.rpartition(":")
    return bool(colon) and not port.isdigit() and port != ""


def _is_prefix(name: str, prefix: str) -> bool:
    if not name.startswith(prefix):
        return False
    return len(name) == len(prefix) or name[len(prefix)] in "/:@"


def _translator(prefix: str, *, only_prefixed: bool) -> Callable[[str], str]:
    def translate(ref: str) -> str:
        if not prefix:
            return ""
        if any(c in ref for c in "/:@"):
            if only_prefixed and not _is_prefix(ref, prefix):
                return ""
            return ref
        return f"{prefix}:{ref}"

    return translate


def add_ref_prefix(prefix: str) -> Callable[[str], str]:
    """Tag-only names become ``<prefix>:<tag>``; full names are kept."""
    return _translator(prefix, only_prefixed=False)


def filter_ref_prefix(prefix: str) -> Callable[[str], str]:
    """Like :func:`add_ref_prefix`, but full names not under ``prefix`` are dropped (``""``)."""
    return _translator(prefix, only_prefixed=True)


def digest_ref(prefix: str) -> Callable[[str], str]:
    """Names an image ``<prefix>@<digest>``."""

    def translate(dgst: str) -> str:
        return f"{prefix}@{dgst}"

    return translate
