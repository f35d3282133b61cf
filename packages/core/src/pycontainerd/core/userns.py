"""Which user namespace this process runs in, where a privilege depends on it.

Importing this module must not import grpc (the shim uses it).
"""

from __future__ import annotations

import functools
import os
from typing import Final

__all__ = ["root_in_initial_namespace"]

#: ``/proc/self/uid_map`` of the initial user namespace: every id maps to itself.
_IDENTITY_MAP: Final = ["0", "0", "4294967295"]


@functools.cache
def root_in_initial_namespace() -> bool:
    """Whether this process is root in the initial user namespace.

    Only there do root's capabilities count for the whole host: making the
    0/0 character devices of overlay whiteouts, or raising a lowered CPU
    priority again (``CAP_SYS_NICE``). Root in a user namespace of its own
    (rootless) has neither.
    """
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as fh:
            return fh.read().split() == _IDENTITY_MAP
    except OSError:
        return False
