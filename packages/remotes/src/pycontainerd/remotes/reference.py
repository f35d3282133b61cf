"""Image references as containerd reads them: ``host[:port]/path[:tag][@digest]``.

containerd's ``reference.Parse`` does no Docker-style normalisation: the
first path component must be a registry host, so ``busybox`` alone is an
error (``hostname required``) while ``docker.io/library/busybox:latest`` is
a complete reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from pycontainerd.core import digests
from pycontainerd.core.errdefs import InvalidArgumentError
from pycontainerd.core.gostr import go_quote

_TAG: Final = re.compile(r"[\w][\w.-]{0,127}")
_PATH: Final = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference.

    Attributes:
        host: the registry host, with port when given (``127.0.0.1:5000``).
        repository: the path after the host (``library/busybox``).
        tag: the tag, ``""`` when only a digest is given.
        digest: the pinned digest, ``""`` when none.
    """

    host: str
    repository: str
    tag: str = ""
    digest: str = ""

    @property
    def locator(self) -> str:
        """``host/repository``."""
        return f"{self.host}/{self.repository}"

    @property
    def object(self) -> str:
        """What the manifests endpoint is asked for: the digest if pinned, else the tag."""
        return self.digest or self.tag

    @property
    def hostname(self) -> str:
        """The host without its port (used in distribution-source label keys)."""
        host = self.host
        if host.startswith("["):
            return host[: host.index("]") + 1]
        return host.rsplit(":", 1)[0] if host.count(":") == 1 else host

    def __str__(self) -> str:
        out = self.locator
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def parse(ref: str) -> Reference:
    """Parse ``ref``; a missing tag and digest means ``latest``.

    Raises:
        InvalidArgumentError: no host, a malformed path, tag or digest.
    """
    quoted = go_quote(ref)
    if not ref:
        msg = "reference: object required"
        raise InvalidArgumentError(msg)
    rest, at, dgst = ref.partition("@")
    if at:
        try:
            digests.parse(dgst)
        except InvalidArgumentError as exc:
            msg = f"invalid reference {quoted}: {exc.message}"
            raise InvalidArgumentError(msg) from None
    slash = rest.find("/")
    if slash <= 0:
        msg = f"invalid reference {quoted}: hostname required"
        raise InvalidArgumentError(msg)
    host, path = rest[:slash], rest[slash + 1 :]
    tag = ""
    colon = path.rfind(":")
    if colon >= 0:
        path, tag = path[:colon], path[colon + 1 :]
        if not _TAG.fullmatch(tag):
            msg = f"invalid reference {quoted}: invalid tag {go_quote(tag)}"
            raise InvalidArgumentError(msg)
    if not path or not _PATH.fullmatch(path):
        msg = f"invalid reference {quoted}: invalid repository path {go_quote(path)}"
        raise InvalidArgumentError(msg)
    if not tag and not dgst:
        tag = "latest"
    return Reference(host=host, repository=path, tag=tag, digest=dgst)
