"""Validation of labels (namespaces, images, containers, content, snapshots, leases).

A label's key and value together may use at most 4096 bytes (UTF-8), as in
containerd. The message follows containerd 1.7, which states the actual size
and shows at most the first 64 bytes of the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from pycontainerd.core.errdefs import InvalidArgumentError

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_SIZE: Final = 4096
KEY_SHOWN: Final = 64

#: Prefix of labels with a meaning to containerd itself (GC references, defaults).
RESERVED_PREFIX: Final = "containerd.io/"


def validate(key: str, value: str) -> None:
    """Check that one label fits the size limit.

    Raises:
        InvalidArgumentError: ``label key and value length (<n> bytes) greater
            than maximum size (4096 bytes), key: <key prefix>``.
    """
    raw_key = key.encode("utf-8", "surrogatepass")
    total = len(raw_key) + len(value.encode("utf-8", "surrogatepass"))
    if total > MAX_SIZE:
        shown = raw_key[:KEY_SHOWN].decode("utf-8", "replace")
        msg = (
            f"label key and value length ({total} bytes) greater than maximum size "
            f"({MAX_SIZE} bytes), key: {shown}"
        )
        raise InvalidArgumentError(msg)


def validate_all(labels: Mapping[str, str]) -> None:
    """Validate every label of ``labels``; the first bad one raises.

    Raises:
        InvalidArgumentError: as ``validate``.
    """
    for key, value in labels.items():
        validate(key, value)
