from __future__ import annotations

import shutil
import subprocess
import sys

from pycontainerd.core import testing

PROBE = "from pycontainerd.core.userns import root_in_initial_namespace as r; print(r())"


def test_root_of_a_user_namespace_of_its_own_is_not_the_hosts_root() -> None:
    # uid 0 inside ``unshare -Ur`` maps only itself (uid_map "0 <euid> 1"): rootless
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    testing.require_binary(unshare)
    out = subprocess.run(
        [unshare, "-Ur", sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
    here = subprocess.run(
        [unshare, "-Ur", "cat", "/proc/self/uid_map"], capture_output=True, text=True, check=True
    )
    assert here.stdout.split()[:1] == ["0"]  # root there, so the uid map is what says no
